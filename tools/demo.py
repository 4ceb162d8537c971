"""`make demo`: Sesame end to end on the local control plane (or the cluster KUBECONFIG names).

Story: a TaskRun asks for secrets that do not exist yet → it waits with a clear condition → the
secrets are stored with the `sesame` CLI → the pod appears with env `secretKeyRef`s and a projected
volume → the pod "runs" (no kubelet here: its status is set the way a kubelet would) → Succeeded.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".sesame"
NAMESPACE = "my-project-development"
VENV_BIN = Path(sys.executable).parent


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(args: list[str], env: dict[str, str], stdin: str | None = None, check: bool = True) -> str:
    shown = " ".join(args)
    print(f"$ {shown}", flush=True)
    result = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, check=False)
    out = result.stdout.rstrip()
    if out:
        print(out)
    if result.returncode != 0:
        print(result.stderr.rstrip(), file=sys.stderr)
        if check:
            raise SystemExit(f"demo: `{shown}` failed with exit code {result.returncode}")
    return result.stdout


def reachable(env: dict[str, str], kubectl: str) -> bool:
    probe = subprocess.run(
        [kubectl, "version", "--request-timeout=5s"], env=env, capture_output=True, check=False
    )
    return probe.returncode == 0


def wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    from localcluster import build_binaries
    from localcluster import main as cluster_main

    bin_dir = build_binaries()
    kubectl = str(bin_dir / "kubectl")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{bin_dir}:{os.environ['PATH']}"}
    if os.environ.get("KUBECONFIG") and reachable(env, kubectl):
        step(f"using the cluster in KUBECONFIG={os.environ['KUBECONFIG']}")
    else:
        step("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
        if cluster_main(["up", "--state", str(STATE)]) != 0:
            return 1
        env["KUBECONFIG"] = str(STATE / "kubeconfig")

    step("installing the TaskRun CRD and creating the project/domain namespace")
    run([kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], env)
    run([kubectl, "wait", "--for=condition=Established", "crd/taskruns.sesame.dev"], env)
    if subprocess.run(
        [kubectl, "get", "ns", NAMESPACE], env=env, capture_output=True, check=False
    ).returncode:
        run([kubectl, "create", "namespace", NAMESPACE], env)
    run([kubectl, "-n", NAMESPACE, "delete", "taskrun", "train", "--ignore-not-found", "--wait"], env)
    for key in ("my_secret", "my_union_api_key", "my_file_secret", "gcp_sa"):
        name = key.replace("_", "-")
        run([kubectl, "-n", NAMESPACE, "delete", "secret", name, "db-creds", "--ignore-not-found"], env)

    step("starting the operator (sesame operator run)")
    STATE.mkdir(exist_ok=True)
    log_path = STATE / "operator-demo.log"
    with log_path.open("w") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "sesame", "operator", "run", "--namespace", NAMESPACE, "--standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(3)
        step("applying examples/taskrun.yaml before its secrets exist: it waits, it does not fail")
        run([kubectl, "apply", "-f", str(ROOT / "examples/taskrun.yaml")], env)

        def secrets_ready(field: str) -> list[str]:
            """kubectl printing one field of the TaskRun's SecretsReady condition."""
            jsonpath = f"jsonpath={{.status.conditions[?(@.type=='SecretsReady')].{field}}}{{'\\n'}}"
            return [kubectl, "-n", NAMESPACE, "get", "taskrun", "train", "-o", jsonpath]

        def reason() -> str:
            command = secrets_ready("reason")
            read = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            return read.stdout.strip()

        wait_for("the SecretsReady condition", lambda: reason() == "SecretNotFound")
        run([kubectl, "-n", NAMESPACE, "get", "taskrun", "train"], env)
        run(secrets_ready("message"), env)

        step("storing the secrets with the sesame CLI (values come from stdin and are never printed)")
        for key in ("my_secret", "my_union_api_key", "my_file_secret", "gcp_sa"):
            run(
                ["sesame", "create", "secret", "--project", "my_project", "--domain", "development", key],
                env,
                stdin=secrets.token_urlsafe(24),
            )
        run(
            [
                kubectl,
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "generic",
                "db-creds",
                f"--from-literal=password={secrets.token_urlsafe(24)}",
            ],
            env,
        )
        run(["sesame", "get", "secret", "--project", "my_project", "--domain", "development"], env)

        step("the TaskRun proceeds by itself: one pod, secrets by reference only")
        wait_for(
            "the pod",
            lambda: (
                subprocess.run(
                    [kubectl, "-n", NAMESPACE, "get", "pod", "train"],
                    env=env,
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            ),
        )
        pod = json.loads(
            subprocess.run(
                [kubectl, "-n", NAMESPACE, "get", "pod", "train", "-o", "json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        main_container = pod["spec"]["containers"][0]
        print("env of container 'main':")
        for entry in main_container["env"]:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            source = f"secretKeyRef {ref['name']}/{ref['key']}" if ref else f"value {entry['value']!r}"
            print(f"  {entry['name']:<34} {source}")
        print("volumes:")
        print(json.dumps(pod["spec"]["volumes"], indent=2))
        print("mounts of container 'main':", json.dumps(main_container.get("volumeMounts")))

        step("no kubelet runs here: mark the pod Succeeded as a kubelet would, and watch the TaskRun follow")
        status = {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "python:3.12-slim",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
            }
        }
        run(
            [
                kubectl,
                "-n",
                NAMESPACE,
                "patch",
                "pod",
                "train",
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(status),
            ],
            env,
        )
        run(
            [kubectl, "-n", NAMESPACE, "wait", "--for=condition=Succeeded", "taskrun/train", "--timeout=60s"],
            env,
        )
        run([kubectl, "-n", NAMESPACE, "get", "taskrun", "train"], env)
        run([kubectl, "-n", NAMESPACE, "get", "taskrun", "train", "-o", "jsonpath={.status}{'\\n'}"], env)
        run(
            [kubectl, "-n", NAMESPACE, "get", "events", "--field-selector", "involvedObject.kind=TaskRun"],
            env,
        )
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    step("done")
    print(f"operator log: {log_path}")
    if env.get("KUBECONFIG") == str(STATE / "kubeconfig"):
        print(
            f"the local control plane keeps running: export KUBECONFIG={STATE / 'kubeconfig'}; "
            "stop it with `make cluster-down`"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
