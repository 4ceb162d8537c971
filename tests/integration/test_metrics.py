"""Observability against the real API server: Prometheus metrics move with real TaskRuns and never
name a secret; the chart's exact arguments give a health endpoint, metrics and JSON logs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, eventually
from tests.support.operator import running_operator
from tests.unit.test_chart_rbac import helm_template, of_kind

TEMPLATE = {"spec": {"containers": [{"name": "main", "image": "python:3.12-slim", "command": ["true"]}]}}
# Every label Sesame's metrics may carry, and what its values look like: bounded enums, never a
# key, a Secret name, a namespace, a TaskRun name or a value (DESIGN §7).
LABEL_VALUES = {
    "phase": re.compile(r"Succeeded|Failed"),
    "reason": re.compile(r"[A-Z][A-Za-z]*"),
    "source": re.compile(r"taskrun|webhook"),
    "result": re.compile(r"[a-z_]+"),
    "resource": re.compile(r"taskruns|pods|secrets"),
    "le": re.compile(r"[0-9.e+-]+|\+Inf"),
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

        # One TaskRun straight to Succeeded.
        cluster.create_taskrun(namespace, "train", {"secrets": [{"key": "my_secret"}], "template": TEMPLATE})
        eventually(lambda: cluster.pod(namespace, "train"), what="pod train")
        eventually(lambda: phase(cluster, namespace, "train"), what="status of train")
        cluster.set_pod_phase(namespace, "train", "Succeeded")
        eventually(lambda: phase(cluster, namespace, "train") == "Succeeded", what="train Succeeded")

        # One that waits for a secret that does not exist yet, then goes on when it appears.
        spec = {"secrets": [{"key": "late_secret"}], "template": TEMPLATE}
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

    assert moved("sesame_taskrun_pods_created_total") == 2
    assert moved("sesame_taskruns_finished_total", phase="Succeeded") == 1
    assert moved("sesame_taskrun_create_to_pod_seconds_count") == 2
    assert moved("sesame_injection_problems_total", reason="SecretNotFound", source="taskrun") >= 1
    assert value(after, "sesame_handler_workers") == 16
    assert ("sesame_handler_backlog", ()) in after

    # Bounded labels only, and no secret, key, name or namespace anywhere in the exposition.
    for (name, labels), _ in after.items():
        for label, label_value in labels:
            assert label in LABEL_VALUES, f"{name}: unexpected label {label}"
            assert LABEL_VALUES[label].fullmatch(label_value), f"{name}: {label}={label_value!r}"
    for forbidden in (canary, "my_secret", "late_secret", "my-secret", "late-secret", namespace, "train"):
        assert forbidden not in text, f"{forbidden!r} in the metrics"


@contextlib.contextmanager
def operator_process(cluster: Cluster, args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """`sesame operator run ARGS` (what the image's ENTRYPOINT runs) as its own process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sesame", "operator", "run", *args],
        env={**cluster.env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_chart_arguments_serve_health_metrics_and_json_logs(
    cluster: Cluster, namespace: str, canary: str
) -> None:
    health, metrics = free_port(), free_port()
    values = [
        f"watchNamespaces={{{namespace}}}",
        "webhook.enabled=false",
        f"health.port={health}",
        f"metrics.port={metrics}",
        "logFormat=json",
    ]
    rendered = [d for d in yaml.safe_load_all(helm_template(values).stdout) if d]
    [container] = of_kind(rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    cluster.store_secret(namespace, "my_secret", canary)
    with operator_process(cluster, container["args"]) as process:
        eventually(lambda: fetch(f"http://127.0.0.1:{health}/healthz"), timeout=60, what="/healthz")
        eventually(lambda: fetch(f"http://127.0.0.1:{metrics}/metrics"), what="/metrics")
        cluster.create_taskrun(namespace, "train", {"secrets": [{"key": "my_secret"}], "template": TEMPLATE})
        eventually(lambda: cluster.pod(namespace, "train"), what="pod train")
        text = fetch(f"http://127.0.0.1:{metrics}/metrics") or ""
        assert "sesame_taskrun_pods_created_total 1.0" in text
        time.sleep(0.5)  # let the last log lines out
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    assert all("message" in record for record in records)
    assert any("train" in record["message"] for record in records) or any(
        "train" in json.dumps(record) for record in records
    )
    assert canary not in output
