"""`make bench`: every part in one run, so each ratio compares numbers taken on the same machine
at the same moment.

    python -m bench.run            # N=1000, 50/s for 60 s, webhook, 10k TaskRuns (RSS)
    python -m bench.run --quick    # N=100, 10/s for 10 s, no 10k part (under 2 minutes)

Uses the cluster named by SESAME_KUBECONFIG or KUBECONFIG, else starts a local control plane in
a temp dir and stops it at the end. Prints a table; writes bench/results.json and bench/latency.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import helm, load, report, scenarios
from bench.target import open_target

HERE = Path(__file__).resolve().parent


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"bench [{time.monotonic() - STARTED:5.0f}s] {message}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=100, 10/s for 10 s, no 10k part")
    parser.add_argument("--n", type=int, help="pods in the floor and TaskRuns in the burst (default 1000)")
    parser.add_argument("--rate", type=float, help="TaskRuns per second, sustained part (default 50)")
    parser.add_argument("--duration", type=float, help="seconds of the sustained part (default 60)")
    parser.add_argument(
        "--skip-cost", action="store_true", help="skip the 10k-TaskRun / 100-namespace memory part"
    )
    parser.add_argument("--concurrency", type=int, default=load.CONCURRENCY, help="client threads (16)")
    parser.add_argument("--webhook-pairs", type=int, help="labelled + unlabelled creates (default 500)")
    parser.add_argument("--node-runs", type=int, help="trivial tasks run on the node (default 20)")
    parser.add_argument("--profile", action="store_true", help="py-spy the operator during the burst")
    parser.add_argument("--output", type=Path, default=HERE, help="where results.json and latency.png go")
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or (100 if quick else 1000)
    args.rate = args.rate or (10.0 if quick else 50.0)
    args.duration = args.duration or (10.0 if quick else 60.0)
    args.webhook_pairs = args.webhook_pairs or (50 if quick else 500)
    args.node_runs = args.node_runs or (3 if quick else 20)
    args.skip_scale = args.skip_cost or quick
    return args


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(HERE.parent), *args], check=False, capture_output=True, text=True
    ).stdout.strip()


def commit() -> str:
    """The commit measured, `+dirty` when the tree has changes (of anyone's) on top of it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return f"{head}+dirty" if dirty else head or "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        log("--profile: py-spy is not installed (make venv installs it); not profiling")
        return None
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "100", "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "commit": commit(),
        "load_average": {"start": loadavg()},
        "config": {
            "n": args.n,
            "rate": args.rate,
            "duration": args.duration,
            "concurrency": args.concurrency,
            "webhook_pairs": args.webhook_pairs,
        },
    }
    raw: dict[str, Any] = {}
    with open_target(log) as target:
        results["cluster"] = {"owned": target.owned}
        bench = scenarios.Bench(target, f"sbench-{uuid.uuid4().hex[:6]}", log)
        try:
            phase(results, "floor", f"floor: {args.n} pre-injected pods")
            results["floor"] = scenarios.floor(bench, args.n, args.concurrency)
            phase(results, "operator_floor", f"operator floor: {args.n} TaskRuns done by the client itself")
            results["operator_floor"] = scenarios.operator_floor(bench, args.n, args.concurrency)

            burst_ns = bench.namespace("burst")
            sustained_ns = bench.namespace("sustained")
            operator = bench.operator(["--namespace", burst_ns, "--namespace", sustained_ns])
            cost: dict[str, Any] = {}
            results["cost"] = cost
            try:
                cost["operator_ready_s"] = bench.wait_ready(operator, burst_ns)
                operator.wait_settled(quiet_seconds=2.0)
                cost["rss_idle_mib"] = operator.usage().rss_mib
                phase(results, "burst", f"burst: {args.n} TaskRuns")
                spy = profiler(operator.pid, args.output / "profile-burst.svg") if args.profile else None
                results["burst"] = scenarios.taskrun_burst(
                    bench, operator, burst_ns, args.n, args.concurrency
                )
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its flame graph on Ctrl-C
                    spy.wait(timeout=60)
                cost["rss_after_burst_mib"] = operator.usage().rss_mib
                phase(results, "sustained", f"sustained: {args.rate:g}/s for {args.duration:g} s")
                results["sustained"] = scenarios.sustained(
                    bench, operator, sustained_ns, args.rate, args.duration
                )
                usage = operator.usage()
                cost["rss_after_sustained_mib"] = usage.rss_mib
                cost["peak_rss_mib"] = usage.peak_rss_mib
                cost["operator_cpu_s_total"] = usage.cpu_seconds
            finally:
                operator.stop()

            if target.node:
                phase(results, "node", f"node: {args.node_runs} trivial tasks run for real, one at a time")
                results["node"] = node_part(bench, args.node_runs)
            else:
                log("node: skipped, the cluster has no node of the local kind")
                results["node"] = {"skipped": "no local node"}

            missing = scenarios.webhook_missing()
            if missing:
                log(f"webhook: skipped, {missing}")
                results["webhook"] = {"skipped": missing}
            else:
                phase(results, "webhook", f"webhook: {args.webhook_pairs} labelled vs unlabelled pod creates")
                results["webhook"] = webhook_part(bench, args.webhook_pairs)

            helm_missing = "--quick" if args.quick else helm.missing(target)
            if helm_missing:
                log(f"helm: skipped, {helm_missing}")
                results["helm"] = {"skipped": helm_missing}
            else:
                phase(results, "helm", "helm: the chart as shipped, install → Ready and leader failover")
                results["helm"] = helm.measure(target, log)

            if args.skip_scale:
                reason = "--quick" if args.quick else "--skip-cost"
                cost["scale"] = {"skipped": reason}
            else:
                phase(results, "scale", "scale: 10,000 TaskRuns and 10,000 Secrets in 100 namespaces")
                cost["scale"] = scenarios.scale(bench, 100, 100, args.concurrency)
        finally:
            if not target.owned:
                bench.cleanup()
            bench.close()
    results["load_average"]["end"] = loadavg()
    for name in ("floor", "burst", "sustained"):
        raw[name] = results[name].get("_samples")
    raw["webhook"] = (results.get("webhook") or {}).get("_samples")
    results["ratios"] = report.ratios(results)
    results["targets"] = report.targets(results)
    results["_raw"] = raw
    return results


def node_part(bench: scenarios.Bench, runs: int) -> dict[str, Any]:
    namespace = bench.namespace("node")
    operator = bench.operator(["--namespace", namespace])
    try:
        bench.wait_ready(operator, namespace)
        return scenarios.node_runs(bench, operator, namespace, runs)
    finally:
        operator.stop()


def webhook_part(bench: scenarios.Bench, pairs: int) -> dict[str, Any]:
    """An operator serving the webhook on a loopback port, for this run's namespace only."""
    namespace = bench.namespace("webhook")
    config_name = f"{bench.prefix}-webhook"
    with tempfile.TemporaryDirectory(prefix="sesame-bench-webhook-") as cert_dir:
        env = {
            "SESAME_WEBHOOK": "local",
            "SESAME_WEBHOOK_PORT": str(free_port()),
            "SESAME_WEBHOOK_CERT_DIR": cert_dir,
            "SESAME_WEBHOOK_CONFIG_NAME": config_name,
            "SESAME_WEBHOOK_NAMESPACES": namespace,
        }
        operator = bench.operator(["--namespace", namespace], env)
        try:
            bench.wait_ready(operator, namespace)
            return scenarios.webhook(bench, namespace, pairs)
        finally:
            operator.stop()
            # Sesame leaves its configuration behind on purpose (fail closed); this one was ours.
            bench.delete_webhook_configuration(config_name)


def phase(results: dict[str, Any], name: str, title: str) -> None:
    average = loadavg()
    results["load_average"][name] = average
    log(f"{title} (load average {average[0]:.2f})")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(
        f"{'quick' if args.quick else 'full'} run: N={args.n}, {args.rate:g}/s for {args.duration:g} s, "
        f"concurrency {args.concurrency}; load average {loadavg()}"
    )
    results = run(args)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    raw = results.pop("_raw")
    report.write_json(results, args.output / "results.json")
    plotted = report.plot(results, raw, args.output / "latency.png")
    m = results["machine"]
    print()
    print(
        f"Sesame benchmark at {results['commit']}, {results['mode']} run, "
        f"{m['cpus']} CPUs ({m['cpu_model']}), "
        f"load average {results['load_average']['start']} → {results['load_average']['end']}, "
        f"{results['elapsed_s']:.0f} s"
    )
    print()
    print(report.table(results))
    print()
    log(f"wrote {args.output / 'results.json'}" + (f" and {args.output / 'latency.png'}" if plotted else ""))
    if not plotted:
        log("no plot: matplotlib is not installed (it is in the dev extra)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
