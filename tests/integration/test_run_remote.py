"""`sesame run --remote` on the session cluster's real node, with the operator run in-process.

Each test is one story; the runs inside a story go concurrently, as users' runs would. What the
task printed is checked twice: on the CLI's stdout (streamed through the API server) and in
`kubectl logs` (the kubelet's own copy) — masked in both, the canary nowhere.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from sesame.cli.errors import ExitCode
from tests.support import leaks
from tests.support.cluster import ROOT, TASK_IMAGE, Cluster, eventually
from tests.support.operator import running_operator
from tests.support.sesame_run import SESAME, LiveRun, run_to_end, taskrun_name

EXAMPLES = ROOT / "examples"


def kubectl_logs(cluster: Cluster, namespace: str, pod: str) -> str:
    done = subprocess.run(
        [cluster.kubectl(), "-n", namespace, "logs", pod], env=cluster.env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    leaks.record(f"kubectl logs {namespace}/{pod}", done.stdout)
    return done.stdout


def test_the_examples_run_in_pods_with_every_delivery_form(
    cluster: Cluster, namespace: str, canary: str
) -> None:
    values = {
        "my_secret": f"{canary}-env",
        "my_union_api_key": f"{canary}-custom",
        "my_file_secret": f"first {canary}\nsecond line\n",
        "gcp_sa": json.dumps({"type": "service_account", "private_key": canary}),
    }
    for key, value in values.items():
        cluster.store_secret(namespace, key, value)
    env = cluster.env()
    where = ["--remote", "--namespace", namespace]
    with running_operator([namespace]):
        runs = [  # the default image: ghcr.io/sesame-dev/sesame-task:<version>, present on the node
            LiveRun(env, *where, str(EXAMPLES / "using_secrets.py"), "t1"),
            LiveRun(env, *where, str(EXAMPLES / "using_secrets.py"), "t2", "--calls", "3"),
            LiveRun(env, *where, str(EXAMPLES / "using_secrets_file.py"), "t1"),
        ]
        t1, t2, files = (run.finish() for run in runs)
        for done in (t1, t2, files):
            assert done.code == 0, done.err
            assert f"created in namespace {namespace!r} (image {TASK_IMAGE})" in done.err
            name = taskrun_name(done)
            assert f"  kubectl -n {namespace} logs -f {name}\n" in done.err
            assert done.err.endswith(f"sesame: TaskRun {name} Succeeded\n")
            assert canary not in done.out + done.err
        length = len(values["my_secret"])
        assert t1.out == f"t1 read my_secret ({length} characters); printed by mistake it reads ****\n"
        assert (
            t2.out == "t2 would call the API 3 time(s) with UNION_API_KEY set\nsesame: task 't2' returned 3\n"
        )
        assert files.out == (
            f"t1 read /etc/sesame/secrets/my_file_secret ({len(values['my_file_secret'])} characters)\n"
            "t1 found a service_account credential at /etc/sesame/secrets/gcp_sa\n"
            "sesame: task 't1' returned 'service_account'\n"
        )
        assert kubectl_logs(cluster, namespace, taskrun_name(t1)) == t1.out  # the kubelet's copy: masked too

        # The TaskRun asks for exactly the decorator's requests; the ConfigMap with the code is its own.
        name = taskrun_name(files)
        taskrun = cluster.taskrun(namespace, name)
        assert taskrun["spec"]["secrets"] == [
            {"key": "my_file_secret", "mountRequirement": "FILE"},
            {"key": "gcp_sa", "envVar": "GOOGLE_APPLICATION_CREDENTIALS", "mountRequirement": "FILE"},
        ]
        assert cluster.taskrun(namespace, taskrun_name(t2))["spec"]["secrets"] == [
            {"key": "my_union_api_key", "envVar": "UNION_API_KEY"}
        ]
        assert taskrun["status"]["phase"] == "Succeeded"
        code = cluster.configmap(namespace, name)
        assert code is not None
        assert code["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "sesame.dev/v1alpha1",
                "kind": "TaskRun",
                "name": name,
                "uid": taskrun["metadata"]["uid"],
            }
        ]
        assert code["data"]["task.py"] == (EXAMPLES / "using_secrets_file.py").read_text()
        cluster.custom.delete_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns", name)
        eventually(
            lambda: cluster.configmap(namespace, name) is None, what="the ConfigMap to go with its TaskRun"
        )


TASKS = """
import base64, os, subprocess, sys, time
import sesame

@sesame.task(secret_requests=[sesame.Secret(key="api_token")])
def report(count: int, ratio: float, loud: bool, tags: list, limits: dict, label: str = "none") -> None:
    shown = (f"{type(v).__name__}={v!r}" for v in (count, ratio, loud, tags, limits, label))
    print("inputs:", *shown, flush=True)
    value = sesame.current_context().secrets.get(key="api_token")
    sys.stdout.write("split: " + value[:7])
    sys.stdout.flush()
    time.sleep(0.3)  # the rest of the value arrives in a later write
    sys.stdout.write(value[7:] + "\\n")
    print("b64:", base64.b64encode(value.encode()).decode(), flush=True)
    child = "import os; print('child:', os.environ['SESAME_SECRET_API_TOKEN'])"
    subprocess.run([sys.executable, "-c", child])
    os.write(2, b"fd2: " + value.encode() + b"\\n")
    raise SystemExit(count)

@sesame.task(secret_requests=[sesame.Secret(key="api_token")])
def leak() -> dict:
    return {"token": sesame.current_context().secrets.get(key="api_token")}
"""


def test_inputs_exit_codes_masking_and_a_returned_secret(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path
) -> None:
    cluster.store_secret(namespace, "api_token", canary)
    tasks = tmp_path / "tasks.py"
    tasks.write_text(TASKS)
    env = cluster.env()
    where = ["--remote", "--namespace", namespace, "--image", TASK_IMAGE]
    with running_operator([namespace]):
        runs = [
            LiveRun(
                env,
                *where,
                str(tasks),
                "report",
                "--count",
                "3",
                "--ratio",
                "2.5",
                "--loud",
                "--tags",
                '["a", 1]',
                "--limits",
                '{"cpu": [1, 2]}',
            ),
            LiveRun(env, *where, str(tasks), "leak"),
        ]
        report, leak = (run.finish() for run in runs)

        assert report.code == 3  # the container's exit code
        # The pod's log (streamed to stdout) holds the container's stdout and stderr, interleaved.
        lines = report.out.splitlines()
        assert [line for line in lines if not line.startswith("fd2")] == [
            "inputs: int=3 float=2.5 bool=True list=['a', 1] dict={'cpu': [1, 2]} str='none'",
            "split: ****",
            "b64: ****",
            "child: ****",
        ]
        assert "fd2: ****" in lines
        assert report.err.endswith(f"sesame: TaskRun {taskrun_name(report)} Failed (exit code 3, Error)\n")
        logs = kubectl_logs(cluster, namespace, taskrun_name(report))
        assert "split: ****\n" in logs
        assert "fd2: ****\n" in logs

        assert leak.code == ExitCode.TASK_RETURNED_SECRET == 65
        assert (
            "sesame: task 'leak' returned a value that contains the secret 'api_token', so it fails and the "
            "value is not printed; return something derived from the secret, never the secret\n"
        ) in leak.out  # the pod's log holds the container's stdout and stderr
        assert cluster.taskrun(namespace, taskrun_name(leak))["status"]["phase"] == "Failed"
        for done in (report, leak):
            assert canary not in done.out + done.err


NEEDS = """
import sesame

@sesame.task(secret_requests=[sesame.Secret(key="api_token")])
def needs() -> None:
    print("got", sesame.current_context().secrets.get(key="api_token"))
"""


def test_a_run_waits_for_a_missing_secret_and_goes_on_once_it_is_stored(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path
) -> None:
    task = tmp_path / "needs.py"
    task.write_text(NEEDS)
    env = cluster.env()
    where = ["--remote", "--namespace", namespace, "--image", TASK_IMAGE]
    missing = (
        f"secret 'api_token' not found: no Secret 'api-token' in namespace '{namespace}'; "
        f"run `sesame create secret --namespace {namespace} api_token`"
    )
    nowhere = run_to_end(env, "--remote", "--project", "no_such", "--domain", "project", str(task), "needs")
    assert nowhere.code == ExitCode.NAMESPACE_NOT_FOUND
    assert nowhere.err.startswith("error: namespace 'no-such-project' not found (from --project no_such")
    with running_operator([namespace]):
        impatient = LiveRun(env, *where, "--no-wait-for-secrets", str(task), "needs")
        interrupted = LiveRun(env, *where, str(task), "needs")
        patient = LiveRun(env, *where, str(task), "needs")
        detached = run_to_end(env, *where, "--no-wait", str(task), "needs")

        assert detached.code == 0
        assert re.fullmatch(r"needs-[0-9a-f]{6}\n", detached.out)
        assert f"  kubectl -n {namespace} logs -f {detached.out.strip()}\n" in detached.err

        early = impatient.finish()
        assert early.code == ExitCode.SECRET_MISSING
        assert f"error: TaskRun {taskrun_name(early)} waits: {missing} (it starts by itself" in early.err

        interrupted.wait_for_line(f"sesame: waiting: {missing} — the run starts by itself once that is done")
        interrupted.interrupt()
        stopped = interrupted.finish()
        assert stopped.code == ExitCode.INTERRUPTED
        assert f"sesame: stopped following; TaskRun {taskrun_name(stopped)} goes on" in stopped.err

        patient.wait_for_line(f"sesame: waiting: {missing}")
        stored = subprocess.run(
            [SESAME, "create", "secret", "--namespace", namespace, "api_token"],
            env=env, input=canary, capture_output=True, text=True,
        )  # fmt: skip
        assert stored.returncode == 0, stored.stderr
        done = patient.finish()
        assert done.code == 0, done.err
        assert done.out == "got ****\n"
        assert canary not in done.out + done.err
        # The runs nobody followed any more went on by themselves too.
        for name in (taskrun_name(early), taskrun_name(stopped), detached.out.strip()):
            eventually(
                lambda name=name: (
                    cluster.taskrun(namespace, name).get("status", {}).get("phase") == "Succeeded"
                ),
                timeout=60,
                what=f"TaskRun {name} to succeed",
            )


def test_reserved_env_names_are_refused_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    """The CRD's CEL rule refuses what sesame.requests refuses (tests/unit/test_requests.py lists more)."""

    def create(env_var: str) -> str | None:
        body = {
            "apiVersion": "sesame.dev/v1alpha1",
            "kind": "TaskRun",
            "metadata": {"name": "reserved"},
            "spec": {
                "secrets": [{"key": "k", "envVar": env_var}],
                "template": {"spec": {"containers": [{"name": "main", "image": TASK_IMAGE}]}},
            },
        }
        try:
            cluster.custom.create_namespaced_custom_object(
                "sesame.dev", "v1alpha1", namespace, "taskruns", body, dry_run="All"
            )
        except ApiException as error:
            return f"{error.status}: {json.loads(error.body)['message']}"
        return None

    for name in [
        "PATH",
        "LD_PRELOAD",
        "PYTHONPATH",
        "http_proxy",
        "SSL_CERT_FILE",
        "KUBERNETES_SERVICE_HOST",
    ]:
        message = create(name)
        assert message is not None, name
        assert message.startswith("422: ")
        assert "spec.secrets[0].envVar" in message
        assert "envVar is reserved: a secret must not set PATH, HOME, LD_*, PYTHON*, SESAME_*" in message
    for name in ["UNION_API_KEY", "MY_PATH", "HTTP_PROXY_PASSWORD", "SESAMEKEY"]:
        assert create(name) is None, name
