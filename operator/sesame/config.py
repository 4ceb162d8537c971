"""The operator's configuration: flags and environment → one checked, immutable object.

`sesame operator run` builds it from its flags (each flag's default comes from the environment)
and hands it to Kopf through the memo; `kopf run -m sesame.manager` (tests, power users) builds it
from the environment alone. Nothing else in the operator reads `os.environ`.

  SESAME_WORKERS              reconcile workers and API threads (default 16)
  SESAME_METRICS_PORT / _ADDR Prometheus metrics (0: off) / listening address (default 0.0.0.0)
  SESAME_PEERING_LIFETIME     seconds after its last keep-alive a silent replica counts as dead
  SESAME_RETRY_MAX_SECONDS    the longest wait before a failed TaskRun pass is retried (default 30)
  SESAME_KOPF_SCANNING        on | off: Kopf's cluster-wide namespace and CRD observation
  SESAME_NAMESPACE / POD_NAMESPACE   Sesame's own namespace: never serves TaskRuns
  SESAME_REFUSED_NAMESPACES   more namespaces whose TaskRuns are refused (comma-separated)
  SESAME_WEBHOOK…             the admission webhook (sesame.webhook.options)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from sesame.webhook.options import OptionsError, WebhookOptions, from_env

ALWAYS_REFUSED = frozenset({"kube-system", "kube-public", "kube-node-lease"})
LOG_LEVELS = ("debug", "info", "warning")
LOG_FORMATS = ("plain", "full", "json")


class ConfigError(ValueError):
    """A setting that cannot work; the message names it and the fix."""


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    standalone: bool = True
    peering: str | None = None
    priority: int | None = None
    peering_lifetime: int = 15
    retry_max_seconds: int = 30
    liveness: str | None = None
    metrics_port: int = 0
    metrics_addr: str = "0.0.0.0"  # noqa: S104 (a pod's metrics port is scraped from outside it)
    log_format: str = "full"
    log_level: str = "info"
    workers: int = 16
    kopf_scanning: bool = True
    own_namespace: str | None = None
    refused_namespaces: frozenset[str] = ALWAYS_REFUSED
    webhook: WebhookOptions = field(default_factory=WebhookOptions)

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> OperatorConfig:
        env = os.environ if env is None else env
        own = (env.get("SESAME_NAMESPACE") or env.get("POD_NAMESPACE") or "").strip() or None
        extra = {n.strip() for n in (env.get("SESAME_REFUSED_NAMESPACES") or "").split(",") if n.strip()}
        refused = ALWAYS_REFUSED | extra | ({own} if own else set())
        try:
            webhook = from_env(env)
        except OptionsError as error:
            raise ConfigError(str(error)) from None
        values: dict[str, object] = {
            "workers": _int(env, "SESAME_WORKERS", 16, minimum=1),
            "metrics_port": _int(env, "SESAME_METRICS_PORT", 0, minimum=0),
            "metrics_addr": (env.get("SESAME_METRICS_ADDR") or "0.0.0.0").strip(),  # noqa: S104
            "peering_lifetime": _int(env, "SESAME_PEERING_LIFETIME", 15, minimum=5),
            "retry_max_seconds": _int(env, "SESAME_RETRY_MAX_SECONDS", 30, minimum=1),
            "kopf_scanning": (env.get("SESAME_KOPF_SCANNING") or "on").strip().lower() != "off",
            "own_namespace": own,
            "refused_namespaces": frozenset(refused),
            "webhook": webhook,
        }
        values.update(overrides)
        return OperatorConfig(**values)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value
