"""`make bench-quick` still runs: the benchmark cannot rot unnoticed.

Only that it completes and writes its results; no timing is asserted (the numbers belong to
`make bench`, on a quiet machine). The webhook part needs the API server to reach a loopback port.
The bench's secret value, its output and its operators' logs go to the leak canary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench import workload
from bench.operator_process import KEEP_LOGS

from tests.support import leaks
from tests.support.cluster import ROOT, Cluster

# Every part runs, each as small as it goes: this checks that the bench works, not its numbers.
SMALLEST = ("--n", "20", "--rate", "10", "--duration", "2", "--webhook-pairs", "10", "--node-runs", "1")
PARTS = ("machine", "config", "floor", "burst", "sustained", "webhook", "cost", "ratios", "targets")


@pytest.mark.local_plane
def test_quick_bench_completes(cluster: Cluster, tmp_path: Path) -> None:
    logs = tmp_path / "operator-logs"
    logs.mkdir()
    env = {**cluster.env(), "SESAME_KUBECONFIG": str(cluster.kubeconfig), KEEP_LOGS: str(logs)}
    for value in {v for s in workload.secrets() for v in s["stringData"].values() if len(v) >= 16}:
        leaks.plant(value)  # the bench's Secrets hold no canary of their own: their value is one
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", *SMALLEST, "--output", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    leaks.record("bench output", result.stdout + result.stderr)
    operator_logs = sorted(logs.iterdir())
    for log in operator_logs:
        leaks.record(f"bench operator log {log.name}", log.read_bytes())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert operator_logs, "the bench ran no operator (or kept no log of it)"
    leaks.record("bench results.json", (tmp_path / "results.json").read_text())
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(PARTS) <= results.keys()
    assert results["mode"] == "quick"
    for part in ("floor", "burst", "sustained"):
        assert results[part]["create_to_pod"]["count"] > 0, part
    assert results["burst"]["writes_per_taskrun"] is not None
    assert "rss_idle_mib" in results["cost"]
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert "| part" in result.stdout
