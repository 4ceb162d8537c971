"""How the pod admission webhook is configured: environment variables → one checked value.

Pure (no I/O), so the rules are unit-tested:

  SESAME_WEBHOOK               off | local | service
  SESAME_WEBHOOK_PORT          port the HTTPS server listens on (default 9443)
  SESAME_WEBHOOK_ADDR          listening address (local: 127.0.0.1; service: 0.0.0.0)
  SESAME_WEBHOOK_HOST          host name in the local URL (default: the address, 127.0.0.1 for 0.0.0.0)
  SESAME_WEBHOOK_CERT_DIR      where tls.crt/tls.key/ca.crt live: provided (cert-manager) or generated
  SESAME_WEBHOOK_SERVICE       service mode: namespace/name[:port] of the Service in front of the operator
  SESAME_WEBHOOK_TIMEOUT       timeoutSeconds of the webhook, 1..5 (default 5)
  SESAME_WEBHOOK_CONFIG_NAME   name of the MutatingWebhookConfiguration (default sesame)
  SESAME_WEBHOOK_NAMESPACES    optional comma-separated namespaces: only these are ever sent to the webhook
  SESAME_WEBHOOK_CERT_VALIDITY_SECONDS  lifetime of a generated certificate (default one year); it is
                               replaced in the running operator when a third of it is left
  SESAME_WEBHOOK_CLIENT_CA     a CA file: only clients with a certificate it signed may call the webhook
                               (the API server, configured to present one: its AdmissionConfiguration
                               kubeConfigFile). Unset: any client that reaches the port may, so the
                               chart's NetworkPolicy is what keeps others out.
  SESAME_NAMESPACE / POD_NAMESPACE   Sesame's own namespace, never sent to the webhook
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MODES = ("off", "local", "service")
DEFAULT_PORT = 9443
DEFAULT_SERVICE_PORT = 443
DEFAULT_TIMEOUT = 5
MAX_TIMEOUT = 5  # every second here is spent from the pod-create p99 budget of the whole cluster
DEFAULT_CONFIG_NAME = "sesame"
SYSTEM_NAMESPACES = ("kube-system",)
DEFAULT_CERT_VALIDITY = 365 * 24 * 3600
MIN_CERT_VALIDITY = 10


class OptionsError(ValueError):
    """A webhook setting that cannot work; the message names the variable and the fix."""


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    port: int = DEFAULT_SERVICE_PORT

    @property
    def dns_names(self) -> list[str]:
        """The names the API server may use for the Service (it dials `<name>.<namespace>.svc`)."""
        return [
            self.name,
            f"{self.name}.{self.namespace}",
            f"{self.name}.{self.namespace}.svc",
            f"{self.name}.{self.namespace}.svc.cluster.local",
        ]


@dataclass(frozen=True)
class WebhookOptions:
    mode: str = "off"
    port: int = DEFAULT_PORT
    addr: str = "127.0.0.1"
    host: str = "127.0.0.1"
    cert_dir: Path = Path(tempfile.gettempdir()) / f"sesame-webhook-{os.geteuid()}"
    service: ServiceRef | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT
    config_name: str = DEFAULT_CONFIG_NAME
    own_namespace: str | None = None
    only_namespaces: tuple[str, ...] = ()
    cert_validity_seconds: int = DEFAULT_CERT_VALIDITY
    client_ca: Path | None = None

    @property
    def default_cert_dir(self) -> bool:
        """The shared temp location: it must be this user's own, private directory."""
        return self.cert_dir == WebhookOptions.cert_dir

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def cert_check_seconds(self) -> int:
        """How often certificate files are checked: often enough to rotate long before expiry."""
        return max(1, min(3600, self.cert_validity_seconds // 30))

    @property
    def excluded_namespaces(self) -> list[str]:
        """Never sent to the webhook: an outage of Sesame must not block the system or Sesame itself."""
        names = list(SYSTEM_NAMESPACES)
        if self.own_namespace and self.own_namespace not in names:
            names.append(self.own_namespace)
        return names

    @property
    def certificate_hosts(self) -> list[str]:
        """Every name or address the API server may dial: loopback, the local host, the Service."""
        hosts = ["127.0.0.1", "localhost"]
        for candidate in (self.host, self.addr):
            if candidate and not _unspecified(candidate) and candidate not in hosts:
                hosts.append(candidate)
        if self.service is not None:
            hosts += [name for name in self.service.dns_names if name not in hosts]
        return hosts


def _unspecified(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_unspecified
    except ValueError:
        return False


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise OptionsError(f"{name}={raw!r} is not a number") from None


def parse_service(raw: str) -> ServiceRef:
    """`namespace/name` or `namespace/name:port`."""
    where = f"SESAME_WEBHOOK_SERVICE={raw!r}"
    namespace, slash, rest = raw.strip().partition("/")
    name, colon, port_raw = rest.partition(":")
    if not slash or not namespace or not name:
        raise OptionsError(
            f"{where} must be namespace/name or namespace/name:port, e.g. sesame/sesame-webhook"
        )
    port = DEFAULT_SERVICE_PORT
    if colon:
        try:
            port = int(port_raw)
        except ValueError:
            raise OptionsError(f"{where}: port {port_raw!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise OptionsError(f"{where}: port must be 1..65535")
    return ServiceRef(namespace=namespace, name=name, port=port)


def from_env(env: Mapping[str, str] | None = None) -> WebhookOptions:
    env = os.environ if env is None else env
    mode = (env.get("SESAME_WEBHOOK") or "off").strip().lower()
    if mode not in MODES:
        raise OptionsError(f"SESAME_WEBHOOK={mode!r}; use one of: {', '.join(MODES)}")
    port = _int(env, "SESAME_WEBHOOK_PORT", DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise OptionsError(f"SESAME_WEBHOOK_PORT={port} must be 1..65535")
    timeout = _int(env, "SESAME_WEBHOOK_TIMEOUT", DEFAULT_TIMEOUT)
    if not 1 <= timeout <= MAX_TIMEOUT:
        raise OptionsError(
            f"SESAME_WEBHOOK_TIMEOUT={timeout} must be 1..{MAX_TIMEOUT} seconds: a slow webhook delays "
            "every labelled pod create"
        )
    service: ServiceRef | None = None
    service_raw = (env.get("SESAME_WEBHOOK_SERVICE") or "").strip()
    if service_raw:
        service = parse_service(service_raw)
    if mode == "service" and service is None:
        own = (env.get("SESAME_NAMESPACE") or env.get("POD_NAMESPACE") or "").strip()
        raise OptionsError(
            "SESAME_WEBHOOK=service needs SESAME_WEBHOOK_SERVICE=namespace/name[:port] "
            f"(e.g. {own or 'sesame'}/sesame-webhook)"
        )
    addr = (env.get("SESAME_WEBHOOK_ADDR") or "").strip() or ("0.0.0.0" if mode == "service" else "127.0.0.1")  # noqa: S104
    host = (env.get("SESAME_WEBHOOK_HOST") or "").strip() or ("127.0.0.1" if _unspecified(addr) else addr)
    cert_dir_raw = (env.get("SESAME_WEBHOOK_CERT_DIR") or "").strip()
    cert_dir = Path(cert_dir_raw) if cert_dir_raw else WebhookOptions.cert_dir
    own_namespace = (env.get("SESAME_NAMESPACE") or env.get("POD_NAMESPACE") or "").strip() or None
    only = tuple(
        dict.fromkeys(n.strip() for n in (env.get("SESAME_WEBHOOK_NAMESPACES") or "").split(",") if n.strip())
    )
    config_name = (env.get("SESAME_WEBHOOK_CONFIG_NAME") or "").strip() or DEFAULT_CONFIG_NAME
    validity = _int(env, "SESAME_WEBHOOK_CERT_VALIDITY_SECONDS", DEFAULT_CERT_VALIDITY)
    if validity < MIN_CERT_VALIDITY:
        raise OptionsError(
            f"SESAME_WEBHOOK_CERT_VALIDITY_SECONDS={validity} must be at least {MIN_CERT_VALIDITY} seconds"
        )
    client_ca_raw = (env.get("SESAME_WEBHOOK_CLIENT_CA") or "").strip()
    client_ca = Path(client_ca_raw) if client_ca_raw else None
    if client_ca is not None and not client_ca.is_file():
        raise OptionsError(f"SESAME_WEBHOOK_CLIENT_CA={client_ca_raw!r} is not a readable file")
    return WebhookOptions(
        client_ca=client_ca,
        mode=mode,
        port=port,
        addr=addr,
        host=host,
        cert_dir=cert_dir,
        service=service,
        timeout_seconds=timeout,
        config_name=config_name,
        own_namespace=own_namespace,
        only_namespaces=only,
        cert_validity_seconds=validity,
    )
