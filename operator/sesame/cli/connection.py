"""Build an API client from a kubeconfig (or the pod's ServiceAccount) and turn transport and
HTTP failures into `CliError`s with one clear line."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from sesame.cli.errors import CliError, ExitCode

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass
class Connection:
    api: client.ApiClient
    host: str
    timeout: float

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def request_timeout(self) -> tuple[float, float]:
        return (self.timeout, self.timeout)

    def close(self) -> None:
        self.api.close()


def connect(kubeconfig: str | None, context: str | None, timeout: float) -> Connection:
    """The kubeconfig named by --kubeconfig, else $KUBECONFIG (read now: the client library froze
    its default when it was imported), else ~/.kube/config; inside a pod without any of them,
    the pod's ServiceAccount."""
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    in_cluster = (
        kubeconfig is None
        and context is None
        and not os.environ.get("KUBECONFIG")
        and not os.path.exists(os.path.expanduser(DEFAULT_KUBECONFIG))
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    if kubeconfig is not None and not os.path.isfile(os.path.expanduser(kubeconfig)):
        raise CliError(ExitCode.CONFIG, f"kubeconfig {kubeconfig} does not exist (--kubeconfig)")
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
    except (ConfigException, OSError, ValueError, yaml.YAMLError) as error:
        where = "the in-cluster ServiceAccount" if in_cluster else f"kubeconfig {path}"
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        if context is not None and "context" in detail.lower():
            detail = f"context {context!r} not found ({detail})"
        raise CliError(
            ExitCode.CONFIG,
            f"cannot load {where}: {detail} (set --kubeconfig/--context or KUBECONFIG)",
        ) from None
    # Fail fast: a CLI should say "unreachable" once, not retry a dead address three times.
    configuration.retries = 0
    return Connection(api=client.ApiClient(configuration), host=str(configuration.host), timeout=timeout)


def status_message(error: ApiException) -> str:
    """The `message` of the Status the API server sent, on one line."""
    message = ""
    try:
        body: Any = json.loads(error.body or "")
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except (ValueError, TypeError):
        message = ""
    message = message or str(error.reason or "")
    return " ".join(message.split())


def status_kind(error: ApiException) -> str | None:
    """`details.kind` of the Status (e.g. "namespaces" when the namespace is missing)."""
    try:
        body: Any = json.loads(error.body or "")
    except (ValueError, TypeError):
        return None
    if isinstance(body, dict) and isinstance(body.get("details"), dict):
        kind = body["details"].get("kind")
        return str(kind) if kind else None
    return None


def raise_api_error(error: ApiException, verb: str, resource: str, namespace: str) -> NoReturn:
    """Translate an HTTP failure that the caller did not handle itself."""
    what = f"{verb} {resource} in namespace {namespace!r}"
    server = status_message(error)
    if error.status == 403:
        raise CliError(ExitCode.PERMISSION_DENIED, f"permission denied: cannot {what} (server: {server})")
    if error.status == 401:
        raise CliError(
            ExitCode.UNAUTHORIZED,
            f"unauthorized: the API server did not accept the credentials of the kubeconfig "
            f"(to {what}): {server}",
        )
    if error.status == 0:  # the client reports TLS failures this way
        raise CliError(ExitCode.UNREACHABLE, f"cannot reach the Kubernetes API server: {server}")
    raise CliError(ExitCode.ERROR, f"cannot {what}: the API server answered {error.status}: {server}")


def _oserror_text(error: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    return None


def unreachable(error: BaseException, host: str, timeout: float) -> CliError:
    """One line for a transport failure (urllib3): refused, timed out, name resolution, reset."""
    import urllib3.exceptions as u3

    chain: list[BaseException] = [error]
    reason = getattr(error, "reason", None)
    if isinstance(reason, BaseException):
        chain.append(reason)
    # Order matters: urllib3's NewConnectionError is (for history's sake) a ConnectTimeoutError.
    if any(isinstance(e, u3.NameResolutionError) for e in chain):
        detail = "the host name does not resolve"
    elif any(isinstance(e, u3.NewConnectionError) for e in chain):
        detail = _oserror_text(error) or "the connection failed"
    elif any(isinstance(e, (u3.TimeoutError, TimeoutError)) for e in chain):
        detail = f"timed out after {timeout:g}s"
    elif any(isinstance(e, u3.SSLError) for e in chain):
        detail = "TLS handshake failed"
    else:
        detail = _oserror_text(error) or type(reason if isinstance(reason, BaseException) else error).__name__
    return CliError(
        ExitCode.UNREACHABLE,
        f"cannot reach the Kubernetes API server at {host}: {detail} "
        "(is the cluster running? check --kubeconfig/--context or KUBECONFIG)",
    )
