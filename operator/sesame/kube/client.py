"""One configured `kubernetes` API client per operator process."""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    # KUBECONFIG is read now, not when the client library was imported.
    path = kubeconfig or os.environ.get("KUBECONFIG")
    api: client.ApiClient = config.new_client_from_config(config_file=path, context=context)
    return api
