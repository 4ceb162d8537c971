"""The operator process: wires Kopf settings, the shared API client, metrics and every handler.

This is the composition root (like kubebuilder's manager): the only module that imports the
adapters, so `kopf run -m sesame.manager` and `sesame operator run` load the same operator.
Configuration comes from the environment so both entry points agree:

  SESAME_METRICS_PORT   serve Prometheus metrics on this port (0 or unset: off)
  SESAME_WEBHOOK        off | local | service: the pod admission webhook (see sesame.webhook.options)
  SESAME_KOPF_SCANNING  on (default) | off: Kopf's cluster-wide namespace and CRD observation; the
                        Helm chart sets off (exact namespaces only; no RBAC on namespaces or CRDs)
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from prometheus_client import start_http_server

from sesame import metrics
from sesame.controller import (
    kopf_tuning,
    taskruns,  # noqa: F401  (registers handlers)
)
from sesame.controller.taskruns import Controller
from sesame.kube import inventory  # noqa: F401  (registers the Secret index)
from sesame.kube.client import api_client
from sesame.webhook import handler as webhook_handler  # noqa: F401  (registers the admission handler)
from sesame.webhook.server import close_webhook, configure_webhook

logger = logging.getLogger("sesame.manager")
_metrics_ports: set[int] = set()
kopf_tuning.apply_readiness_fix()  # before kopf.run: startup linear in the number of indexed objects
kopf_tuning.quiet_terminating_namespace_events()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Only explicit events reach the TaskRuns; handler log lines stay logs.
    settings.posting.level = logging.WARNING
    workers = int(os.environ.get("SESAME_WORKERS", "16"))
    settings.execution.max_workers = workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # No on.create/update/field/resume handlers: nothing reads Kopf's per-event copy of each object.
    settings.persistence.diffbase_storage = kopf_tuning.NoDiffBase()
    kopf_tuning.narrow_watches(settings)
    # off (the Helm chart): no cluster-wide namespace/CRD observation, so the least-privilege RBAC
    # needs neither (Kopf would retry the forbidden list for a minute, blocking startup with
    # --namespace). Namespace globs need it on: with it off, Kopf serves exact names only.
    settings.scanning.disabled = os.environ.get("SESAME_KOPF_SCANNING", "on").strip().lower() == "off"
    configure_webhook(settings, memo)
    # With --peering: a replica killed without notice is replaced this many seconds after its last
    # keep-alive (Kopf's default is 60 s); keep-alives go out every lifetime minus 5–10 s.
    settings.peering.lifetime = int(os.environ.get("SESAME_PEERING_LIFETIME") or 15)
    controller = Controller(api=api_client(pool_size=workers + 4), executor=settings.execution.executor)
    memo["sesame_controller"] = controller
    metrics.observe_runtime(settings.execution.executor, controller.waiting.count)
    threading.Thread(target=controller.retries.run, name="sesame-retries", daemon=True).start()
    port = int(os.environ.get("SESAME_METRICS_PORT") or 0)
    if port and port not in _metrics_ports:  # one server per process, even across in-process runs
        start_http_server(port, addr=os.environ.get("SESAME_METRICS_ADDR", "0.0.0.0"))  # noqa: S104
        _metrics_ports.add(port)
        logger.info("metrics on :%d/metrics", port)


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    close_webhook(memo)
    controller = memo.get("sesame_controller")
    if controller is not None:
        controller.retries.stop()
        controller.api.close()
