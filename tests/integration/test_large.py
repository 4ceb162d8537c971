"""Large and many: 50 secrets in one TaskRun, a secret at Kubernetes' 1 MiB limit, and 100 TaskRuns
sharing one secret that is rotated half-way.

What rotation can promise is decided by the pod spec, since Kubernetes (not Sesame) delivers the
values: a FILE secret is an item of a projected volume mounted without `subPath`, which the
kubelet refreshes in place (atomic `..data` symlink swap, within its sync period plus cache TTL);
an env secret is a `secretKeyRef`, resolved once when the container starts, so a running task
keeps the value it started with. These tests assert the pod spec that makes those guarantees.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.support import leaks
from tests.support.bulk import pods_of, taskruns_of
from tests.support.cluster import TASK_IMAGE, UNSCHEDULED, Cluster, eventually
from tests.support.processes import operator_process

MAIN = {"name": "main", "image": TASK_IMAGE}
# The pod specs are what these tests judge: the pods need only exist, never run.
TEMPLATE: dict[str, Any] = {"spec": {"containers": [MAIN], **UNSCHEDULED}}
MIB = 1024 * 1024
# What the operator logs once it has handled a watch-event of a Secret (the namespace holds one).
SECRET_HANDLED = "Handler 'secret_event' succeeded"


def report(what: str, **figures: Any) -> None:
    shown = ", ".join(f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\n[large] {what}: {shown}")


def sesame(cluster: Cluster, *argv: str, stdin: bytes = b"") -> None:
    """The CLI as users run it; it must succeed."""
    result = cluster.sesame(*argv, stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()


def done(cluster: Cluster, namespace: str, count: int) -> Any:
    def check() -> list[dict[str, Any]] | None:
        runs = [
            t
            for t in taskruns_of(cluster.api, namespace)
            if (t.get("status") or {}).get("podName") == t["metadata"]["name"]
        ]
        return runs if len(runs) >= count else None

    return check


def env_refs(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    container = pod["spec"]["containers"][0]
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env") or []
        if "valueFrom" in e
    }


def file_items(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """path → (Secret, data key) of every projected item."""
    return {
        item["path"]: (source["secret"]["name"], item["key"])
        for volume in pod["spec"].get("volumes") or []
        for source in (volume.get("projected") or {}).get("sources") or []
        if "secret" in source
        for item in source["secret"]["items"]
    }


def sesame_mount(pod: dict[str, Any]) -> dict[str, Any]:
    return next(
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/etc/sesame/secrets"
    )


def test_fifty_secrets_in_one_taskrun(cluster: Cluster, namespace: str, canary: str, tmp_path: Path) -> None:
    keys = [f"secret_{i:02d}" for i in range(50)]
    for key in keys:
        cluster.store_secret(namespace, key, f"{canary}-{key}")
    requests = [{"key": key, **({"mountRequirement": "FILE"} if i % 2 else {})} for i, key in enumerate(keys)]
    started = time.monotonic()
    with operator_process(cluster, [namespace], tmp_path / "operator.log"):
        cluster.create_taskrun(namespace, "fifty", {"secrets": requests, "template": TEMPLATE})
        (run,) = eventually(done(cluster, namespace, 1), timeout=60, what="the pod of the 50-secret TaskRun")
    elapsed = time.monotonic() - started
    (pod,) = pods_of(cluster.api, namespace)
    envs, files = env_refs(pod), file_items(pod)
    report(
        "50-secret TaskRun",
        status_secrets=len(run["status"]["secrets"]),
        env=len(envs),
        files=len(files),
        took=elapsed,
    )
    assert {s["key"] for s in run["status"]["secrets"]} == set(keys)
    assert envs == {f"SESAME_SECRET_{k.upper()}": (k.replace("_", "-"), k) for k in keys[0::2]}
    assert files == {k: (k.replace("_", "-"), k) for k in keys[1::2]}
    assert canary not in str(pod)


def test_a_secret_at_the_1_mib_limit_from_a_binary_file(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path
) -> None:
    blob = tmp_path / "blob.bin"
    marker = f"{canary}-inside-the-blob".encode()
    body = os.urandom(MIB - len(marker) - 2)
    blob.write_bytes(body[: MIB // 2] + marker + b"\x00\xff" + body[MIB // 2 :])  # exactly 1 MiB, binary
    assert blob.stat().st_size == MIB
    leaks.plant(marker.decode())
    sesame(cluster, "create", "secret", "--namespace", namespace, "big_blob", "-f", str(blob))
    stored = cluster.core.read_namespaced_secret("big-blob", namespace)
    assert len(stored.data["big_blob"]) == (MIB + 2) // 3 * 4  # base64 of exactly 1 MiB
    with operator_process(cluster, [namespace], tmp_path / "operator.log") as operator:
        spec = {"secrets": [{"key": "big_blob", "mountRequirement": "FILE"}], "template": TEMPLATE}
        cluster.create_taskrun(namespace, "blob", spec)
        (run,) = eventually(done(cluster, namespace, 1), timeout=60, what="the pod of the TaskRun")
        log = operator.output()
    (pod,) = pods_of(cluster.api, namespace)
    report("1 MiB binary secret", bytes=blob.stat().st_size, pod_spec_bytes=len(str(pod)))
    assert run["status"]["secrets"] == [
        {"key": "big_blob", "delivery": "file", "path": "/etc/sesame/secrets/big_blob"}
    ]
    assert file_items(pod) == {"big_blob": ("big-blob", "big_blob")}
    assert "subPath" not in sesame_mount(pod)
    assert len(str(pod)) < 20_000, "the pod spec holds references, not the value"
    assert marker.decode() not in log


def test_hundred_taskruns_share_a_secret_rotated_half_way(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path
) -> None:
    sesame(
        cluster, "create", "secret", "--namespace", namespace, "shared_token", stdin=f"{canary}-v1".encode()
    )
    before = [f"before-{i:02d}" for i in range(50)]
    after = [f"after-{i:02d}" for i in range(50)]

    def spec(index: int) -> dict[str, Any]:
        request = {"key": "shared_token", **({"mountRequirement": "FILE"} if index % 2 else {})}
        return {"secrets": [request], "template": TEMPLATE}

    started = time.monotonic()
    with operator_process(cluster, [namespace], tmp_path / "operator.log") as operator:
        for index, name in enumerate(before):
            cluster.create_taskrun(namespace, name, spec(index))
        first = eventually(done(cluster, namespace, 50), timeout=90, interval=0.5, what="the first 50 pods")
        versions = {t["metadata"]["name"]: t["metadata"]["resourceVersion"] for t in first}
        pod_versions = {
            p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in pods_of(cluster.api, namespace)
        }
        handled = operator.output().count(SECRET_HANDLED)
        sesame(
            cluster,
            "update",
            "secret",
            "--namespace",
            namespace,
            "shared_token",
            stdin=f"{canary}-v2".encode(),
        )
        rotated = time.monotonic()
        # Positive signals before the absence checks: the operator handled the rotation's watch
        # event (which queues the 50 TaskRuns that request the secret), then reconciled 50 TaskRuns
        # queued after them (the queue is first in, first out).
        eventually(
            lambda: operator.output().count(SECRET_HANDLED) > handled,
            timeout=30,
            what="the operator to handle the rotated Secret's event",
        )
        for index, name in enumerate(after):
            cluster.create_taskrun(namespace, name, spec(index))
        eventually(done(cluster, namespace, 100), timeout=90, interval=0.5, what="all 100 pods")
        runs = taskruns_of(cluster.api, namespace)
        assert operator.alive()
    pods = {p["metadata"]["name"]: p for p in pods_of(cluster.api, namespace)}
    touched = [
        t["metadata"]["name"]
        for t in runs
        if t["metadata"]["name"] in versions
        and t["metadata"]["resourceVersion"] != versions[t["metadata"]["name"]]
    ]
    repodded = [
        name for name, version in pod_versions.items() if pods[name]["metadata"]["resourceVersion"] != version
    ]
    env_pods = [pods[n] for n in before[0::2] + after[0::2]]
    file_pods = [pods[n] for n in before[1::2] + after[1::2]]
    report(
        "100 TaskRuns sharing a rotated secret",
        pods=len(pods),
        env_delivered=len(env_pods),
        file_delivered=len(file_pods),
        taskruns_rewritten_by_rotation=len(touched),
        pods_changed_by_rotation=len(repodded),
        rotation_to_all_pods=time.monotonic() - rotated,
        total=time.monotonic() - started,
    )
    assert sorted(pods) == sorted(before + after)
    # env: a secretKeyRef, resolved when the container starts; a rotation reaches the next start only
    assert all(
        env_refs(p) == {"SESAME_SECRET_SHARED_TOKEN": ("shared-token", "shared_token")} for p in env_pods
    )
    # file: a projected volume item without subPath, which the kubelet refreshes in a running pod
    for pod in file_pods:
        assert file_items(pod) == {"shared_token": ("shared-token", "shared_token")}
        mount = sesame_mount(pod)
        assert "subPath" not in mount
        assert mount["readOnly"] is True
    assert touched == []
    assert repodded == []
    assert all(canary not in str(pod) for pod in pods.values())
