"""The examples run as written: the commands in their comments (namespace, secrets with the `sesame`
CLI, `kubectl apply`, `kubectl wait`, `kubectl logs`), run one by one as a user would, with the
operator running and the real node running the task to the end.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame.webhook.configuration import delete_configuration
from tests.support import leaks
from tests.support.cluster import ROOT, TASK_IMAGE, Cluster, eventually
from tests.support.operator import running_operator

NAMESPACE = "my-project-development"  # the examples' own (tests/integration/test_demo.py uses it too)


def commands_in_comments(example: Path) -> list[str]:
    """The example's instructions: comment lines indented as commands (`#   kubectl …`)."""
    return [line[4:].strip() for line in example.read_text().splitlines() if line.startswith("#   ")]


def namespace_gone(cluster: Cluster) -> bool:
    try:
        cluster.core.read_namespace(NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


@pytest.fixture
def user(cluster: Cluster, canary: str, tmp_path: Path) -> Iterator[list[str]]:
    """Runs an example's commands in a directory holding the examples and the files they read, with
    `sesame` and `kubectl` on the PATH; yields the outputs. The examples' namespace is new for each
    test and deleted after it."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "secret.txt").write_text(f"{canary}-file\n")
    (tmp_path / "sa.json").write_text(json.dumps({"type": "service_account", "private_key": f"{canary}-sa"}))
    (tmp_path / "db-password.txt").write_text(f"{canary}-db")
    if not namespace_gone(cluster):  # left by the demo test or an earlier run
        cluster.delete_namespace(NAMESPACE)
        eventually(lambda: namespace_gone(cluster), timeout=120, what=f"namespace {NAMESPACE} to go")
    outputs: list[str] = []
    try:
        yield outputs
    finally:
        leaks.collect(cluster.api, NAMESPACE)
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(NAMESPACE)
    for output in outputs:
        assert canary not in output


def run_as_written(
    cluster: Cluster, workdir: Path, canary: str, commands: list[str], outputs: list[str]
) -> None:
    """Each command as a user types it; `sesame create secret` without -f gets its value on stdin."""
    env = {**cluster.env(), "PATH": f"{Path(sys.executable).parent}:{cluster.env()['PATH']}"}
    for command in commands:
        argv = shlex.split(command)
        value = f"{canary}-{argv[-1]}".encode() if argv[0] == "sesame" and "-f" not in argv else b""
        done = subprocess.run(argv, cwd=workdir, env=env, input=value, capture_output=True, timeout=180)
        output = (done.stdout + done.stderr).decode()
        outputs.append(output)
        leaks.record(f"example command {command}", output)
        assert done.returncode == 0, f"`{command}` failed: {output}"


def test_the_taskrun_example_runs_as_written(
    cluster: Cluster, canary: str, tmp_path: Path, user: list[str]
) -> None:
    example = ROOT / "examples" / "taskrun.yaml"
    manifest = yaml.safe_load(example.read_text())
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == TASK_IMAGE
    commands = commands_in_comments(example)
    assert commands[0] == f"kubectl create namespace {NAMESPACE}"
    assert commands[-3:] == [
        "kubectl apply -f examples/taskrun.yaml",
        f"kubectl -n {NAMESPACE} wait --for=condition=Succeeded taskrun/train --timeout=2m",
        f"kubectl -n {NAMESPACE} logs train",
    ]
    with running_operator([NAMESPACE]) as runner:
        run_as_written(cluster, tmp_path, canary, commands, user)
        assert user[-1].strip() == "read 5 secrets; gcp_sa is the file /etc/sesame/secrets/gcp_sa"
        assert cluster.taskrun(NAMESPACE, "train")["status"]["phase"] == "Succeeded"
    assert canary not in runner.output


@pytest.mark.local_plane  # the API server calls a webhook on loopback
def test_the_pod_example_runs_as_written(
    cluster: Cluster, canary: str, tmp_path: Path, user: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = ROOT / "examples" / "pod.yaml"
    manifest = yaml.safe_load(example.read_text())
    assert manifest["metadata"]["namespace"] == NAMESPACE
    assert manifest["spec"]["containers"][0]["image"] == TASK_IMAGE
    commands = commands_in_comments(example)
    assert commands[-3:] == [
        "kubectl apply -f examples/pod.yaml",
        f"kubectl -n {NAMESPACE} wait --for=jsonpath='{{.status.phase}}'=Succeeded pod/report --timeout=2m",
        f"kubectl -n {NAMESPACE} logs report",
    ]
    configuration = f"sesame-example-{uuid.uuid4().hex[:8]}"
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SESAME_WEBHOOK", "local")
    monkeypatch.setenv("SESAME_WEBHOOK_PORT", str(port))
    monkeypatch.setenv("SESAME_WEBHOOK_CERT_DIR", str(tmp_path / "certs"))
    monkeypatch.setenv("SESAME_WEBHOOK_CONFIG_NAME", configuration)
    monkeypatch.setenv("SESAME_WEBHOOK_NAMESPACES", NAMESPACE)
    admission = client.AdmissionregistrationV1Api(cluster.api)
    try:
        with running_operator([NAMESPACE]) as runner:

            def registered() -> bool:
                with contextlib.suppress(ApiException):  # 404 until the operator creates it
                    return bool(admission.read_mutating_webhook_configuration(configuration).webhooks)
                return False

            eventually(registered, timeout=60, what="the operator to register its webhook")
            run_as_written(cluster, tmp_path, canary, commands, user)
            assert user[-1].strip() == "read my_secret; gcp_sa is the file /etc/sesame/secrets/gcp_sa"
        assert canary not in runner.output
    finally:
        delete_configuration(cluster.api, configuration)
