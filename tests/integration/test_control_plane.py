"""The local control plane is a real Kubernetes: validation, RBAC, garbage collection, tokens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

import localnode
from tests.support import host
from tests.support.cluster import ROOT, Cluster, eventually


@pytest.mark.local_plane
def test_binaries_report_the_pinned_release(cluster: Cluster) -> None:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "tools/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    out = subprocess.run(
        [cluster.kubectl(), "version", "-o", "json"],
        env=cluster.env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    reported = json.loads(out)
    assert reported["clientVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]
    assert reported["serverVersion"]["gitVersion"] == versions["KUBERNETES_VERSION"]


def test_structural_schema_rejects_with_the_servers_message(cluster: Cluster, namespace: str) -> None:
    with pytest.raises(ApiException) as error:
        cluster.create_taskrun(
            namespace,
            "bad",
            {
                "secrets": [{"key": "a", "mountRequirement": "DISK"}],
                "template": {"spec": {"containers": [{"name": "c"}]}},
            },
        )
    assert error.value.status == 422
    message = json.loads(error.value.body)["message"]
    assert 'spec.secrets[0].mountRequirement: Unsupported value: "DISK"' in message


def test_rbac_denies_an_unprivileged_user(cluster: Cluster, namespace: str) -> None:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    api.set_default_header("Impersonate-User", "jane")
    try:
        with pytest.raises(ApiException) as error:
            client.CoreV1Api(api).list_namespaced_secret(namespace)
        assert error.value.status == 403
        assert 'User "jane" cannot list resource "secrets"' in json.loads(error.value.body)["message"]
    finally:
        api.close()


def test_owner_reference_garbage_collection(cluster: Cluster, namespace: str) -> None:
    owner = cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "controller": True,
    }
    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [ref]}}
    )
    cluster.core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            cluster.core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(dependent_gone, timeout=60, what="kube-controller-manager to collect the dependent")


def test_namespace_deletion_completes(cluster: Cluster) -> None:
    cluster.create_namespace("doomed")
    cluster.core.create_namespaced_config_map("doomed", {"metadata": {"name": "x"}})
    cluster.core.delete_namespace("doomed")

    def gone() -> bool:
        try:
            cluster.core.read_namespace("doomed")
        except ApiException as error:
            return error.status == 404
        return False

    eventually(gone, timeout=60, what="the namespace controller to finish")


def test_service_account_tokens_authenticate(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    token = cluster.core.create_namespaced_service_account_token(
        "robot", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    configuration = client.Configuration()
    configuration.host = cluster.api.configuration.host
    configuration.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as api:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"


def operator_lines(kubeconfig: Path, wanted: str, log: Path) -> list[str]:
    """Start `sesame operator run`, wait until its output says `wanted`, stop it; its lines."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sesame", "operator", "run", "--namespace", "default"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        try:
            eventually(lambda: wanted in log.read_text(), timeout=60, what=f"the operator to say {wanted!r}")
            time.sleep(6)  # one more retry period: the line must not repeat
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = log.read_text().splitlines()
    assert "Traceback" not in log.read_text()
    assert sum(wanted in line for line in lines) == 1, lines
    return lines


def test_an_unreachable_cluster_is_one_line_that_names_server_and_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    lines = operator_lines(kubeconfig, "cannot reach", tmp_path / "op.log")
    assert lines[0].endswith(
        f"cannot reach the Kubernetes API server at https://127.0.0.1:1 (kubeconfig {kubeconfig}) "
        "(MaxRetryError); retrying every 5 s"
    ), lines
    assert len(lines) == 1, lines


def test_make_cluster_lifecycle_leaves_nothing_behind(tmp_path: Path) -> None:
    """`make cluster` twice and `make cluster-down` twice: the node is Ready when `up` returns, and
    after `down` no process, mount, cgroup, network change or kernel setting of it is left."""
    tool = [sys.executable, str(ROOT / "tools/localcluster.py")]
    state = ["--state", str(tmp_path / "state")]
    # What a node killed by SIGKILL leaves: its cgroup root, with kubepods in it, and no process.
    orphan = [hierarchy / "sesame-node-1-1" for hierarchy in localnode.cgroup_hierarchies()]
    for root in orphan:
        (root / "kubepods").mkdir(parents=True)
    live = localnode.live_cgroup_roots()  # the session's node, and any other that runs
    before = host.capture()
    up = subprocess.run([*tool, "up", *state], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    assert "node sesame-node (Ready)" in up.stdout
    assert [root for root in orphan if root.exists()] == [], "the orphaned cgroup root was left"
    for name in live:
        assert all((h / name).is_dir() for h in localnode.cgroup_hierarchies()), f"live {name} removed"
    record = json.loads((tmp_path / "state/pids.json").read_text())
    port = int(record["server"].rsplit(":", 1)[1])
    namespaces = [
        host.pid_namespace_of(init)
        for unshare in localnode.children(record["pids"]["node"])
        for init in localnode.children(unshare)
    ]
    ours = host.Ours(str(tmp_path / "state"), record["cgroup_root"], namespaces[0] if namespaces else None)
    assert ours.pid_namespace, "the node's init was not found"
    try:
        # No CRD in this fresh cluster: the operator's first line says so, then it waits quietly.
        first_lines = operator_lines(tmp_path / "state/kubeconfig", "is not installed", tmp_path / "op.log")
        assert first_lines[0].endswith(
            "the TaskRun CRD (taskruns.sesame.dev) is not installed in the cluster at "
            f"{record['server']} (kubeconfig {tmp_path / 'state/kubeconfig'}): run `kubectl apply "
            "--server-side -f crds/` (or install the Helm chart); waiting for it"
        )
        again = subprocess.run([*tool, "up", *state], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert (tmp_path / "state/bin/kubectl").exists()
        nodes = subprocess.run(
            [str(tmp_path / "state/bin/kubectl"), "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            env={"KUBECONFIG": str(tmp_path / "state/kubeconfig")},
            timeout=60,
        )
        assert nodes.stdout.split() == ["node/sesame-node"], nodes.stderr
    finally:
        down = subprocess.run([*tool, "down", *state], capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stderr
    assert "stopped node" in down.stdout
    assert "stopped kube-apiserver" in down.stdout
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "kube-apiserver still listening"
    assert host.changes(before, host.capture(), ours) == []
    assert list((tmp_path / "state").iterdir()) == []
    twice = subprocess.run([*tool, "down", *state], capture_output=True, text=True, timeout=60)
    assert twice.returncode == 0
    assert "not running" in twice.stdout
