"""`make demo`: Sesame end to end on the local cluster and its real node (or the cluster KUBECONFIG names).

The story a Union or Flyte user knows, with nothing simulated:

1. the cluster (control plane and a node that really runs pods), the TaskRun CRD, the namespace of
   project `my_project` / domain `development`, and the operator;
2. secrets stored with `sesame create secret` (values from stdin, never printed);
3. `sesame run --remote examples/using_secrets.py t1` before `my_secret` exists: the run says what it
   waits for and the command that fixes it; the demo runs that command and the run goes on by
   itself — the kubelet runs the pod, its log is streamed, the value printed by mistake reads ****;
4. a task with a typed input, and the FILE example;
5. what Kubernetes holds: the TaskRuns, the pod's env (references only), the code's ConfigMap,
   owned by its TaskRun.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".sesame"
PROJECT, DOMAIN = "my_project", "development"
NAMESPACE = "my-project-development"
VENV_BIN = Path(sys.executable).parent
SECRETS = ("my_secret", "my_union_api_key", "my_file_secret", "gcp_sa")
WHERE = ["--project", PROJECT, "--domain", DOMAIN]


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(args: list[str], env: dict[str, str], stdin: str | None = None, check: bool = True) -> str:
    print(f"$ {' '.join([Path(args[0]).name, *args[1:]])}", flush=True)  # `kubectl`, not its whole path
    result = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, check=False, cwd=ROOT)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(args)}` failed with exit code {result.returncode}")
    return result.stdout


def sesame_run(args: list[str], env: dict[str, str], when_waiting: list[str] | None = None) -> str:
    """`sesame run …`, shown line by line as it happens; `when_waiting` runs once the run says it
    waits for a secret. Returns the TaskRun's name."""
    command = ["sesame", "run", *args]
    print(f"$ {' '.join(command)}", flush=True)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    assert process.stdout is not None
    name = ""
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith("sesame: TaskRun ") and " created " in line:
            name = line.split()[2]
        if when_waiting and line.startswith("sesame: waiting: "):
            run(when_waiting, env, stdin=secrets.token_urlsafe(24))
            when_waiting = None
    if process.wait() != 0:
        raise SystemExit(f"demo: `{' '.join(command)}` exited with {process.returncode}")
    return name


def kubectl_json(kubectl: str, env: dict[str, str], *args: str) -> Any:
    done = subprocess.run([kubectl, *args, "-o", "json"], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def reachable(env: dict[str, str], kubectl: str) -> bool:
    probe = subprocess.run(
        [kubectl, "version", "--request-timeout=5s"], env=env, capture_output=True, check=False
    )
    return probe.returncode == 0


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
        step("starting the local cluster: etcd, kube-apiserver, controller-manager, scheduler and a node")
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
    run(
        [kubectl, "-n", NAMESPACE, "delete", "taskruns", "--all", "--wait"], env
    )  # a second demo starts afresh
    names = [key.replace("_", "-") for key in SECRETS]
    run([kubectl, "-n", NAMESPACE, "delete", "secret", *names, "--ignore-not-found"], env)

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
        step("storing secrets with the sesame CLI (values come from stdin and are never printed)")
        run(["sesame", "create", "secret", *WHERE, "my_union_api_key"], env, stdin=secrets.token_urlsafe(24))
        with tempfile.TemporaryDirectory(prefix="sesame-demo-") as scratch:  # the values go, once stored
            secret_file, account = Path(scratch) / "secret.txt", Path(scratch) / "sa.json"
            secret_file.write_text(secrets.token_urlsafe(24) + "\n")
            account.write_text(json.dumps({"type": "service_account", "private_key": secrets.token_hex(16)}))
            run(["sesame", "create", "secret", *WHERE, "my_file_secret", "-f", str(secret_file)], env)
            run(["sesame", "create", "secret", *WHERE, "gcp_sa", "-f", str(account)], env)
        run(["sesame", "get", "secret", *WHERE], env)

        step("examples/using_secrets.py t1 in the cluster, before my_secret exists: it waits, then goes on")
        first = sesame_run(
            ["--remote", *WHERE, "examples/using_secrets.py", "t1"],
            env,
            when_waiting=["sesame", "create", "secret", *WHERE, "my_secret"],
        )

        step("a task input, typed from the annotation (t2(calls: int)), and a custom env var")
        sesame_run(["--remote", *WHERE, "examples/using_secrets.py", "t2", "--calls", "3"], env)

        step("secrets as files: examples/using_secrets_file.py")
        sesame_run(["--remote", *WHERE, "examples/using_secrets_file.py", "t1"], env)

        step("what Kubernetes holds: TaskRuns, a pod with references only, the ConfigMap owned by its run")
        run([kubectl, "-n", NAMESPACE, "get", "taskruns"], env)
        pod = kubectl_json(kubectl, env, "-n", NAMESPACE, "get", "pod", first)
        container = pod["spec"]["containers"][0]
        print(f"env of pod {first}, container {container['name']}:")
        for entry in container["env"]:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            source = f"secretKeyRef {ref['name']}/{ref['key']}" if ref else f"value {entry['value']!r}"
            print(f"  {entry['name']:<34} {source}")
        run([kubectl, "-n", NAMESPACE, "logs", first], env)
        owner = kubectl_json(kubectl, env, "-n", NAMESPACE, "get", "configmap", first)["metadata"]
        print(f"ConfigMap {first} is owned by:", json.dumps(owner["ownerReferences"]))
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    step("done")
    print(f"operator log: {log_path}")
    if env.get("KUBECONFIG") == str(STATE / "kubeconfig"):
        print(
            f"the local cluster keeps running: export KUBECONFIG={STATE / 'kubeconfig'}; "
            "stop it with `make cluster-down`"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
