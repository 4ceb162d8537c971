"""Observability against the real API server and node: Prometheus metrics move with real TaskRuns
(tasks the kubelet runs to their end) and never name a secret. The chart's arguments — health
endpoint, metrics port, JSON logs — are proven in-cluster by tests/integration/test_helm_incluster.py."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from localcluster import free_port
from tests.support.cluster import UNSCHEDULED, Cluster, eventually
from tests.support.operator import running_operator
from tests.support.tasks import python

# Quick tasks the kubelet runs to their end, one that succeeds and one that fails; and one that
# only needs to exist (its pod waits for no scheduler).
DONE = {"spec": {"containers": [python("main", "pass")]}}
CRASH = {"spec": {"containers": [python("main", "raise SystemExit(3)")]}}
PARKED = {"spec": {"containers": [python("main", "pass")], **UNSCHEDULED}}
# Every label Sesame's metrics may carry, and what its values look like: bounded enums, never a
# key, a Secret name, a namespace, a TaskRun name or a value (DESIGN §7).
LABEL_VALUES = {
    "phase": re.compile(r"Succeeded|Failed"),
    # Why a run ended (a container's or pod's own reason is anyone's free text: "Other" unless
    # known) or why a request was not met.
    "reason": re.compile(
        "Completed|Error|OOMKilled|ContainerCannotRun|DeadlineExceeded|Evicted|PodDeleted|PodFailed"
        "|PodInvalid|Forbidden|NamespaceNotAllowed|InvalidRequest|EnvVarClash|UnknownContainer"
        "|MountPathClash|DirectSecretReference|Other|SecretNotFound|KeyNotFound|SecretNotUsable"
    ),
    "source": re.compile(r"taskrun|webhook"),
    "result": re.compile(r"allowed|denied|skipped"),
    "resource": re.compile(r"taskruns|pods|secrets"),
    "le": re.compile(r"[0-9.e+-]+|\+Inf"),
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback test server)
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def samples(text: str) -> Samples:
    """sesame_* samples as {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("sesame_")
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum over every label set that includes `labels`."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    phase_: str | None = (cluster.taskrun(namespace, name).get("status") or {}).get("phase")
    return phase_


def test_metrics_move_with_taskruns_and_never_name_a_secret(
    cluster: Cluster, namespace: str, canary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("SESAME_METRICS_PORT", str(port))
    monkeypatch.setenv("SESAME_METRICS_ADDR", "127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    cluster.store_secret(namespace, "my_secret", canary)
    with running_operator([namespace]):
        before = samples(eventually(lambda: fetch(url), what="the metrics endpoint"))

        # One TaskRun the kubelet runs to Succeeded, one to Failed (exit code 3).
        cluster.create_taskrun(namespace, "train", {"secrets": [{"key": "my_secret"}], "template": DONE})
        cluster.create_taskrun(namespace, "crash", {"secrets": [{"key": "my_secret"}], "template": CRASH})
        eventually(
            lambda: phase(cluster, namespace, "train") == "Succeeded", timeout=90, what="train Succeeded"
        )
        eventually(lambda: phase(cluster, namespace, "crash") == "Failed", timeout=90, what="crash Failed")

        # One that waits for a secret that does not exist yet, then goes on when it appears.
        spec = {"secrets": [{"key": "late_secret"}], "template": PARKED}
        cluster.create_taskrun(namespace, "late", spec)
        eventually(
            lambda: value(samples(fetch(url) or ""), "sesame_taskruns_waiting_for_secrets") == 1,
            what="the waiting gauge to count the held TaskRun",
        )
        cluster.store_secret(namespace, "late_secret", canary)
        eventually(lambda: cluster.pod(namespace, "late"), what="pod late once its secret exists")
        eventually(
            lambda: value(samples(fetch(url) or ""), "sesame_taskruns_waiting_for_secrets") == 0,
            what="the waiting gauge to drop back",
        )
        text = fetch(url) or ""
    after = samples(text)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("sesame_taskrun_pods_created_total") == 3
    assert moved("sesame_taskruns_finished_total", phase="Succeeded", reason="Completed") == 1
    assert moved("sesame_taskruns_finished_total", phase="Failed", reason="Error") == 1
    assert moved("sesame_taskrun_create_to_pod_seconds_count") == 3
    assert moved("sesame_injection_problems_total", reason="SecretNotFound", source="taskrun") >= 1
    assert value(after, "sesame_workers") == 16
    for gauge in ("sesame_work_queue_depth", "sesame_work_queue_busy", "sesame_forged_pods_total"):
        assert (gauge, ()) in after, gauge

    # Bounded labels only, and no secret, key, name or namespace anywhere in the exposition.
    for (name, labels), _ in after.items():
        for label, label_value in labels:
            assert label in LABEL_VALUES, f"{name}: unexpected label {label}"
            assert LABEL_VALUES[label].fullmatch(label_value), f"{name}: {label}={label_value!r}"
    for forbidden in (
        canary,
        "my_secret",
        "late_secret",
        "my-secret",
        "late-secret",
        namespace,
        "train",
        "crash",
    ):
        assert forbidden not in text, f"{forbidden!r} in the metrics"
