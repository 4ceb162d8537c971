"""`sesame operator run`: Kopf running `sesame.manager`, configured by one `OperatorConfig`."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import sys
import time
from typing import Any

EXAMPLES = """The TaskRun CRD must be installed first (kubectl apply --server-side -f crds/, or the Helm
chart): the operator says so in its first line and waits until it is.

examples:
  sesame operator run --all-namespaces
  sesame operator run --namespace team-a-development --namespace 'team-b-*' --metrics-port 9090
"""
PREFLIGHT_RETRY_SECONDS = 5.0
# The operator's heap is mostly what the imports made and the watch indexes (long-lived, plain
# dicts); CPython's default collector rescans it over and over. Measured with `make bench` (burst
# of 1000 TaskRuns, then 50/s for 30 s): 1.7 s of the operator's CPU in the collector and stalls
# of up to 155 ms with the defaults; 0.6-0.8 s with the imports frozen and young collections
# 14 times rarer.
YOUNG_COLLECTION_THRESHOLD = 10_000
logger = logging.getLogger("sesame.operator")


def parser() -> argparse.ArgumentParser:
    env = os.environ
    top = argparse.ArgumentParser(prog="sesame operator", description="Run the Sesame operator.")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run the operator", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch these namespaces (globs, !negation)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    run.add_argument(
        "--standalone", action="store_true", help="no peering: act even if another instance runs"
    )
    run.add_argument("--peering", default=None, help="peering object name, for one active replica at a time")
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the live replica with the highest one acts (default: random, so that "
        "replicas differ; equal priorities would pause them all)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=None,
        help="seconds after its last keep-alive that a silent replica counts as dead (takeover time; "
        "env SESAME_PEERING_LIFETIME, default 15)",
    )
    run.add_argument("--liveness", default=None, help="health endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus metrics (env SESAME_METRICS_PORT)"
    )
    run.add_argument(
        "--metrics-addr",
        default=None,
        help="metrics listening address (env SESAME_METRICS_ADDR, default 0.0.0.0)",
    )
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="full")
    run.add_argument("--log-level", choices=["debug", "info", "warning"], default="info")
    run.add_argument(
        "--webhook",
        choices=["off", "local", "service"],
        default=env.get("SESAME_WEBHOOK", "off"),
        help="serve the pod admission webhook: 'local' registers a loopback URL, 'service' a cluster Service",
    )
    return top


def build_config(args: argparse.Namespace) -> Any:
    """Flags over environment, checked once."""
    from sesame.config import OperatorConfig

    overrides: dict[str, object] = {
        "namespaces": tuple(args.namespace),
        "standalone": args.standalone or args.peering is None,
        "peering": args.peering,
        "liveness": args.liveness,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    for flag, field in (("peering_lifetime", "peering_lifetime"), ("metrics_port", "metrics_port"),
                        ("metrics_addr", "metrics_addr")):  # fmt: skip
        if getattr(args, flag) is not None:
            overrides[field] = getattr(args, flag)
    env = {**os.environ, "SESAME_WEBHOOK": args.webhook}
    config = OperatorConfig.from_env(env, **overrides)
    priority = args.priority
    if priority is None and not config.standalone:
        # Kopf pauses every replica when two share the highest priority: give each its own.
        priority = 1 + secrets.randbelow(2**31 - 2)
    return OperatorConfig.from_env(env, **overrides, priority=priority)


def preflight(config: Any) -> None:
    """Before Kopf starts: one line for an unreachable cluster or a missing CRD, then wait quietly."""
    from kubernetes.client.exceptions import ApiException

    from sesame import naming
    from sesame.kube.client import api_client, describe_target
    from sesame.kube.rest import JsonApi

    said = ""
    while True:
        try:
            api = JsonApi(api_client(), timeout=10, retries=0)
            api.get(f"/apis/{naming.API_GROUP}/{naming.API_VERSION}")
            return
        except ApiException as error:
            if error.status == 404:
                line = (
                    f"the TaskRun CRD (taskruns.{naming.API_GROUP}) is not installed in the cluster at "
                    f"{describe_target()}: run `kubectl apply --server-side -f crds/` (or install the Helm "
                    "chart); waiting for it"
                )
            else:
                line = f"the API server at {describe_target()} answered HTTP {error.status}; retrying"
        except Exception as error:  # unreachable: connection refused, TLS, DNS
            line = (
                f"cannot reach the Kubernetes API server at {describe_target()} "
                f"({type(error).__name__}); retrying every {PREFLIGHT_RETRY_SECONDS:.0f} s"
            )
        if line != said:
            logger.error(line)
            said = line
        time.sleep(PREFLIGHT_RETRY_SECONDS)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import kopf  # a missing 'operator' extra is named by sesame.entrypoint in one line

    from sesame.config import ConfigError

    try:
        config = build_config(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # `info` is INFO: Kopf's "verbose" is DEBUG, so it is for `debug` only.
    kopf.configure(
        debug=args.log_level == "debug",
        verbose=args.log_level == "debug",
        quiet=args.log_level == "warning",
        log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}[
            args.log_format
        ],
    )
    preflight(config)
    import sesame.manager  # noqa: F401  (registers every handler)

    tune_garbage_collector()
    kopf.run(
        standalone=config.standalone,
        priority=config.priority,
        peering_name=config.peering,
        namespaces=config.namespaces,
        clusterwide=not config.namespaces,
        liveness_endpoint=config.liveness,
        memo=kopf.Memo(sesame_config=config),
    )
    return 0


def tune_garbage_collector() -> None:
    """Freeze what exists before the first watch (modules, classes: never garbage), so no
    collection scans it again, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 10, 10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
