"""One configured `kubernetes` API client per operator process."""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client(
    kubeconfig: str | None = None, context: str | None = None, pool_size: int | None = None
) -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config).

    `pool_size`: connections kept open for reuse; give it the number of threads that call at
    once (the library's default, 5 × CPUs, makes a 16-thread pool on 2 CPUs open and throw away a
    TLS connection for every call beyond the tenth).
    """
    configuration = client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        # KUBECONFIG is read now, not when the client library was imported.
        path = kubeconfig or os.environ.get("KUBECONFIG")
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def describe_target(kubeconfig: str | None = None, context: str | None = None) -> str:
    """Which API server and credentials `api_client` uses, in words: for one-line errors."""
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        return (
            f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')} (in-cluster ServiceAccount)"
        )
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        configuration = client.Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except Exception:
        return f"(kubeconfig {path}, unreadable)"
    return f"{configuration.host} (kubeconfig {path})"
