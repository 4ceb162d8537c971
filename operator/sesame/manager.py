"""The operator process: Kopf settings, the controller and its workers, metrics, the webhook.

This is the composition root (like kubebuilder's manager): the only module that imports the
adapters, so `kopf run -m sesame.manager` and `sesame operator run` load the same operator. Its
configuration is one `OperatorConfig` (sesame.config), handed over in Kopf's memo by
`sesame operator run`, or read from the environment under plain `kopf run`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from sesame import (
    metrics,
    watches,
)
from sesame.config import ConfigError, OperatorConfig
from sesame.controller import kopf_tuning
from sesame.controller.decide import Policy
from sesame.controller.queue import WorkQueue
from sesame.controller.reconcile import Controller, Indexes
from sesame.kube.client import api_client
from sesame.kube.rest import JsonApi
from sesame.webhook import handler as webhook_handler  # noqa: F401  (registers the admission handler)
from sesame.webhook.server import close_webhook, configure_webhook

logger = logging.getLogger("sesame.manager")
CONFIG_MEMO_KEY = "sesame_config"


class DeniedAdmissions(logging.Filter):
    """Kopf logs every denied admission at ERROR ("Webhook 'inject' failed permanently"); a pod
    refused for a missing secret is the webhook working, not failing: INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith(
            "Webhook 'inject' failed permanently"
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("kopf.objects").addFilter(DeniedAdmissions())
_metrics_ports: set[int] = set()
kopf_tuning.apply_readiness_fix()  # before kopf.run: startup linear in the number of indexed objects


def config_of(memo: kopf.Memo) -> OperatorConfig:
    config = memo.get(CONFIG_MEMO_KEY)
    if not isinstance(config, OperatorConfig):
        try:
            config = OperatorConfig.from_env()
        except ConfigError as error:
            raise kopf.PermanentError(str(error)) from None
        memo[CONFIG_MEMO_KEY] = config
    return config


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config = config_of(memo)
    # Sesame posts its own events (names only); Kopf's log-to-event bridge stays off.
    settings.posting.enabled = False
    settings.execution.max_workers = config.workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Only on.event handlers and indexes: nothing reads Kopf's per-event copy of each object.
    settings.persistence.diffbase_storage = kopf_tuning.NoDiffBase()
    kopf_tuning.narrow_watches(settings)
    # off (the Helm chart): no cluster-wide namespace/CRD observation, so the least-privilege RBAC
    # needs neither. Namespace globs need it on: with it off, Kopf serves exact names only.
    settings.scanning.disabled = not config.kopf_scanning
    configure_webhook(settings, memo, config.webhook)
    # With --peering: a replica killed without notice is replaced this many seconds after its last
    # keep-alive (Kopf's default is 60 s); keep-alives go out every lifetime minus 5–10 s.
    settings.peering.lifetime = config.peering_lifetime
    controller = Controller(
        api=JsonApi(api_client(pool_size=config.workers + 4)),
        executor=settings.execution.executor,
        policy=Policy(refused_namespaces=config.refused_namespaces),
        queue=WorkQueue(backoff_max=config.retry_max_seconds),
    )
    # Kopf hands every handler the same index objects; the workers read them between events.
    controller.indexes = Indexes(
        taskruns=kwargs["taskruns"], pods=kwargs["taskrun_pods"], secrets=kwargs["secret_inventory"]
    )
    memo[watches.CONTROLLER_MEMO_KEY] = controller
    controller.start(config.workers)
    metrics.observe_runtime(
        lambda: len(controller.queue),
        lambda: controller.queue.busy,
        lambda: len(controller.waiting),
        config.workers,
    )
    if config.metrics_port and config.metrics_port not in _metrics_ports:  # one server per process
        start_http_server(config.metrics_port, addr=config.metrics_addr)
        _metrics_ports.add(config.metrics_port)
        logger.info("metrics on %s:%d/metrics", config.metrics_addr, config.metrics_port)


@kopf.on.probe(id="controller")
def controller_probe(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    """Liveness: every reconcile worker is alive (a dead one would strand its share of the queue)."""
    controller = memo.get(watches.CONTROLLER_MEMO_KEY)
    if not isinstance(controller, Controller):
        return {"workers": 0}
    dead = [worker.get_name() for worker in controller.workers if worker.done()]
    if dead:
        raise kopf.PermanentError(f"reconcile workers stopped: {', '.join(dead)}")
    return {"workers": len(controller.workers), "queued": len(controller.queue)}


@kopf.on.probe(id="webhook")
async def webhook_probe(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: the admission webhook accepts connections (else every labelled pod is refused)."""
    options = config_of(memo).webhook
    if not options.enabled:
        return "off"
    host = "127.0.0.1" if options.addr in ("0.0.0.0", "::") else options.addr  # noqa: S104
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, options.port), 2.0)
    except (OSError, TimeoutError) as error:
        raise kopf.PermanentError(f"webhook server on {host}:{options.port} unreachable: {error}") from None
    writer.close()
    return "listening"


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    close_webhook(memo)
    controller = memo.get(watches.CONTROLLER_MEMO_KEY)
    if isinstance(controller, Controller):
        await controller.stop()
        controller.api.api.close()
