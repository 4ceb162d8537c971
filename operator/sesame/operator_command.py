"""`sesame operator run`: a thin wrapper over `kopf run -m sesame.manager` with Sesame's settings."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

import kopf

EXAMPLES = """examples:
  sesame operator run --all-namespaces
  sesame operator run --namespace team-a-development --namespace 'team-b-*' --metrics-port 9090
"""


def parser() -> argparse.ArgumentParser:
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
        default=int(os.environ.get("SESAME_PEERING_LIFETIME") or 15),
        help="seconds after its last keep-alive that a silent replica counts as dead (takeover time)",
    )
    run.add_argument("--liveness", default=None, help="health endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics-port", type=int, default=int(os.environ.get("SESAME_METRICS_PORT") or 0))
    run.add_argument("--log-format", choices=["plain", "full", "json"], default="full")
    run.add_argument("--log-level", choices=["debug", "info", "warning"], default="info")
    run.add_argument(
        "--webhook",
        choices=["off", "local", "service"],
        default=os.environ.get("SESAME_WEBHOOK", "off"),
        help="serve the pod admission webhook: 'local' registers a loopback URL, 'service' a cluster Service",
    )
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    os.environ["SESAME_METRICS_PORT"] = str(args.metrics_port)
    os.environ["SESAME_WEBHOOK"] = args.webhook
    os.environ["SESAME_PEERING_LIFETIME"] = str(args.peering_lifetime)
    standalone = args.standalone or args.peering is None
    priority = args.priority
    if priority is None and not standalone:
        # Kopf pauses every replica when two share the highest priority: give each its own.
        priority = 1 + secrets.randbelow(2**31 - 2)
    kopf.configure(
        debug=args.log_level == "debug",
        verbose=args.log_level in ("debug", "info"),
        quiet=args.log_level == "warning",
        log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}[
            args.log_format
        ],
    )
    import sesame.manager  # noqa: F401  (registers every handler)

    kopf.run(
        standalone=standalone,
        priority=priority,
        peering_name=args.peering,
        namespaces=args.namespace or (),
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
