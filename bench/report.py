"""results.json, the printed table (Markdown, so it pastes into the README) and the latency CDF plot."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from bench import apiserver_metrics
from bench.stats import ratio

TARGETS = {
    "burst_vs_floor": 2.0,  # all TaskRuns podded ≤ 2× the floor's all-pods time
    "sustained_p99_s": 1.0,
    "webhook_added_p99_s": 0.005,
    "rss_10k_mib": 150.0,
    "writes_per_taskrun": 3.0,
}


def machine() -> dict[str, Any]:
    model = ""
    memory_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _public(value: Any) -> Any:
    """Drop the raw samples (keys starting with `_`) from what goes into results.json."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    burst, sustained = results.get("burst") or {}, results.get("sustained") or {}
    webhook, cost = results.get("webhook") or {}, results.get("cost") or {}
    values = {
        "burst_vs_floor": (results.get("ratios") or {}).get("burst_all_pods_vs_floor"),
        "sustained_p99_s": (sustained.get("create_to_pod") or {}).get("p99"),
        "webhook_added_p99_s": webhook.get("added_p99_s"),
        "rss_10k_mib": (cost.get("scale") or {}).get("rss_after_mib"),
        "writes_per_taskrun": burst.get("writes_per_taskrun"),
    }
    return {
        name: {
            "target": limit,
            "value": values[name],
            "met": None if values[name] is None else values[name] <= limit,
        }
        for name, limit in TARGETS.items()
    }


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    floor, burst = results.get("floor") or {}, results.get("burst") or {}
    sustained = results.get("sustained") or {}
    floor_lat = floor.get("create_to_pod") or {}
    operator_floor = results.get("operator_floor") or {}
    return {
        "burst_all_pods_vs_operator_floor": ratio(burst.get("all_pods_s"), operator_floor.get("all_pods_s")),
        "operator_floor_vs_floor": ratio(operator_floor.get("all_pods_s"), floor.get("all_pods_s")),
        "burst_all_pods_vs_floor": ratio(burst.get("all_pods_s"), floor.get("all_pods_s")),
        "burst_p50_vs_floor": ratio((burst.get("create_to_pod") or {}).get("p50"), floor_lat.get("p50")),
        "burst_p99_vs_floor": ratio((burst.get("create_to_pod") or {}).get("p99"), floor_lat.get("p99")),
        "sustained_p50_vs_floor": ratio(
            (sustained.get("create_to_pod") or {}).get("p50"), floor_lat.get("p50")
        ),
    }


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_public(results), indent=2, sort_keys=False) + "\n")


def _s(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "–"
    if unit == "ms":
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _lat(summary: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p90", "p99", "max")) -> str:
    if not summary or not summary.get("count"):
        return "–"
    return " / ".join(f"{summary[k] * 1000:.0f}" for k in keys) + " ms"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _met(results: dict[str, Any], name: str) -> str:
    target = results["targets"][name]
    mark = {True: "met", False: "missed", None: "not measured"}[target["met"]]
    limits = {
        "burst_vs_floor": "≤ 2× floor",
        "sustained_p99_s": "p99 ≤ 1 s",
        "webhook_added_p99_s": "≤ 5 ms p99",
        "rss_10k_mib": "≤ 150 MiB",
        "writes_per_taskrun": "≤ 3",
    }
    return f"{limits[name]}: {mark}"


def table(results: dict[str, Any]) -> str:
    config, floor, burst = results["config"], results["floor"], results["burst"]
    sustained, webhook, cost = results["sustained"], results["webhook"], results["cost"]
    r = results["ratios"]
    n = config["n"]
    rows: list[tuple[str, str, str, str]] = [
        (f"floor: {n} pods, pre-injected", "all pods visible", _s(floor.get("all_pods_s")), "1.00×"),
        ("", "create→pod p50 / p90 / p99 / max", _lat(floor.get("create_to_pod")), ""),
        (
            f"operator floor: {n} × (TaskRun + pod + status) by the client",
            "all pods visible",
            _s((results.get("operator_floor") or {}).get("all_pods_s")),
            f"{_x(r.get('operator_floor_vs_floor'))} the floor",
        ),
        (
            f"burst: {n} TaskRuns × 3 Secrets",
            "all TaskRuns have pods",
            _s(burst.get("all_pods_s")),
            f"{_x(r.get('burst_all_pods_vs_floor'))} ({_met(results, 'burst_vs_floor')}); "
            f"{_x(r.get('burst_all_pods_vs_operator_floor'))} the operator floor",
        ),
        (
            "",
            "create→pod p50 / p90 / p99 / max",
            _lat(burst.get("create_to_pod")),
            f"p50 {_x(r.get('burst_p50_vs_floor'))}, p99 {_x(r.get('burst_p99_vs_floor'))}",
        ),
        (
            f"sustained: {config['rate']:g}/s × {config['duration']:g} s",
            "create→pod p50 / p99",
            _lat(sustained.get("create_to_pod"), ("p50", "p99")),
            _met(results, "sustained_p99_s"),
        ),
        (
            "",
            "pods outstanding at end / max; trend",
            f"{sustained.get('outstanding_at_end')} / {sustained.get('outstanding_max')}; "
            + ("–" if sustained.get("lag_trend_per_s") is None else f"{sustained['lag_trend_per_s']:+.2f}/s"),
            "kept up" if sustained.get("kept_up") else "fell behind",
        ),
    ]
    node = results.get("node") or {}
    if node.get("skipped"):
        rows.append(("node", "skipped", node["skipped"], ""))
    elif node:
        rows.append(
            (
                f"node: {node.get('runs')} trivial tasks, one at a time",
                "create→pod / container started / Succeeded p50",
                " / ".join(
                    _s((node.get(k) or {}).get("p50"))
                    for k in ("create_to_pod", "create_to_container_started", "create_to_succeeded")
                ),
                "the kubelet's real work",
            )
        )
    if webhook.get("skipped"):
        rows.append(("webhook", "skipped", webhook["skipped"], ""))
    else:
        rows.append(
            (
                f"webhook: {webhook.get('pairs')} labelled vs unlabelled",
                "added latency p50 / p99",
                f"{_s(webhook.get('added_p50_s'), 'ms')} / {_s(webhook.get('added_p99_s'), 'ms')}",
                _met(results, "webhook_added_p99_s"),
            )
        )
    scale = cost.get("scale") or {}
    if scale.get("skipped"):
        rss_10k = f"– ({scale['skipped']})"
    else:
        rss_10k = f"{scale.get('rss_idle_with_secrets_mib', 0):.0f} / {scale.get('rss_after_mib', 0):.0f}"
    writes = burst.get("requests") or {}
    write_detail = ", ".join(
        f"{label} {count / n:.2f}"
        for label, count in writes.items()
        if label.split(" ", 1)[0] in apiserver_metrics.WRITE_VERBS
    )
    rows += [
        (
            "cost (burst)",
            "operator CPU per TaskRun",
            f"{burst.get('operator_cpu_ms_per_taskrun', 0):.1f} ms",
            "",
        ),
        (
            "",
            "API writes per TaskRun",
            f"{burst.get('writes_per_taskrun') or 0:.2f} ({write_detail})",
            _met(results, "writes_per_taskrun"),
        ),
        ("", "API reads per TaskRun", f"{burst.get('reads_per_taskrun') or 0:.2f}", ""),
    ]
    if burst.get("plane_cpu_ms_per_object") is not None and floor.get("plane_cpu_ms_per_object"):
        rows.append(
            (
                "",
                "kube-apiserver + etcd CPU per TaskRun",
                f"{burst['plane_cpu_ms_per_object']:.1f} ms (per floor pod: "
                f"{floor['plane_cpu_ms_per_object']:.1f} ms)",
                f"{burst['plane_cpu_ms_per_object'] / floor['plane_cpu_ms_per_object']:.2f}× the floor's",
            )
        )
    rows += [
        (
            "cost (memory)",
            "operator RSS idle / after burst / after sustained",
            f"{cost.get('rss_idle_mib', 0):.0f} / {cost.get('rss_after_burst_mib', 0):.0f} / "
            f"{cost.get('rss_after_sustained_mib', 0):.0f} MiB",
            "",
        ),
        (
            "",
            "RSS with 10k Secrets idle / + 10k TaskRuns",
            f"{rss_10k} MiB" if not scale.get("skipped") else rss_10k,
            _met(results, "rss_10k_mib"),
        ),
    ]
    if scale.get("all_pods_s") is not None:
        rows.append(
            (
                "scale: 10k TaskRuns, 100 namespaces",
                "all TaskRuns have pods; create→pod p50",
                f"{_s(scale['all_pods_s'])}; {_s((scale.get('create_to_pod') or {}).get('p50'))}",
                f"operator ready in {_s(scale.get('operator_ready_s'))} with 10k Secrets",
            )
        )
    header = ("part", "metric", "value", "vs floor / target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [
        "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def plot(results: dict[str, Any], raw: dict[str, Any], path: Path) -> bool:
    """Latency CDFs of every part; False (and no file) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = [
        ("floor: pod create→visible", raw.get("floor")),
        ("burst: TaskRun create→pod", raw.get("burst")),
        (f"sustained {results['config']['rate']:g}/s: TaskRun create→pod", raw.get("sustained")),
        ("webhook: labelled pod create", (raw.get("webhook") or {}).get("labelled")),
        ("webhook baseline: unlabelled pod create", (raw.get("webhook") or {}).get("unlabelled")),
    ]
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for label, samples in series:
        if not samples:
            continue
        ordered = sorted(samples)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.step([s * 1000 for s in ordered], ys, where="post", label=f"{label} (n={len(ordered)})")
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("fraction of requests")
    axes.set_ylim(0, 1.01)
    axes.grid(True, which="both", alpha=0.3)
    m = results["machine"]
    axes.set_title(
        f"Sesame latency CDFs — N={results['config']['n']}, {m['cpus']} × {m['cpu_model'] or 'CPU'}",
        fontsize=10,
    )
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
