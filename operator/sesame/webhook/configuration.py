"""The MutatingWebhookConfiguration Sesame fills in: built purely here, written once at startup.

Kopf's managed mode is not used: it hard-codes a 30 s timeout, has no namespaceSelector and keeps
overwriting the object. Sesame's configuration is narrow on purpose (DESIGN.md §4): only pods that
carry `sesame.dev/inject: "true"`, only on CREATE, never in `kube-system` or Sesame's own namespace,
and it fails closed, so a pod that asked for secrets is never admitted without them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import naming

logger = logging.getLogger("sesame.webhook")

WEBHOOK_NAME = f"inject.{naming.API_GROUP}"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server


def url_client_config(base_url: str, path: str, ca_bundle: str | None) -> dict[str, Any]:
    """`clientConfig` for an endpoint the API server reaches by URL (local mode)."""
    config: dict[str, Any] = {"url": f"{base_url.rstrip('/')}/{path.lstrip('/')}"}
    if ca_bundle:
        config["caBundle"] = ca_bundle
    return config


def service_client_config(
    namespace: str, name: str, port: int, path: str, ca_bundle: str | None
) -> dict[str, Any]:
    """`clientConfig` for the in-cluster Service in front of the operator (service mode)."""
    config: dict[str, Any] = {
        "service": {"namespace": namespace, "name": name, "port": port, "path": f"/{path.lstrip('/')}"}
    }
    if ca_bundle:
        config["caBundle"] = ca_bundle
    return config


def build_configuration(
    *,
    name: str,
    client_config: Mapping[str, Any],
    timeout_seconds: int,
    excluded_namespaces: Sequence[str],
    only_namespaces: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole MutatingWebhookConfiguration object, ready for create/replace."""
    expressions: list[dict[str, Any]] = [
        {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": list(excluded_namespaces)}
    ]
    if only_namespaces:
        expressions.append({"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(only_namespaces)})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": name,
            "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE},
        },
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": dict(client_config),
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchLabels": {naming.INJECT_LABEL: "true"}},
                "namespaceSelector": {"matchExpressions": expressions},
                # Fail closed: when Sesame cannot answer, a pod that asked for secrets is refused,
                # never started without them (the objectSelector keeps every other pod out of it).
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                # The handler only reads; dry-run requests are answered the same way, safely.
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                # Never: Sesame delivers secrets to the containers the pod's author wrote. With
                # IfNeeded, a later webhook that adds a container (a mesh sidecar, a log agent)
                # would make the API server call Sesame again, and every container that asked for
                # no particular list would then hand the secrets to that third-party container.
                # The injection is deterministic on the author's spec, so one call is enough, and
                # it spends one webhook round trip of the pod-create budget instead of two.
                "reinvocationPolicy": "Never",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


class ConfigurationError(RuntimeError):
    """The configuration cannot be written; the message says why and what to do."""


def apply_configuration(api: client.ApiClient, body: Mapping[str, Any]) -> None:
    """Fill in the configuration's webhooks, creating the object only when it does not exist.

    In a cluster the Helm chart creates the (empty) object, so the operator needs no right to
    create webhook configurations and `helm uninstall` removes it; the operator then owns only its
    `webhooks`. Its metadata (Helm's ownership labels and annotations) is kept as it is.
    """
    # Any: the client's stubs want model objects; it accepts (and sends) plain dicts as they are.
    admission: Any = client.AdmissionregistrationV1Api(api)
    name = body["metadata"]["name"]
    for _ in range(5):  # a concurrent writer (a second replica) bumps resourceVersion: read again
        try:
            existing = api.sanitize_for_serialization(admission.read_mutating_webhook_configuration(name))
        except ApiException as error:
            if error.status != 404:
                raise ConfigurationError(_refused("read", name, error)) from None
            _create(admission, body)
            return
        replacement = {**body, "metadata": existing["metadata"]}
        try:
            admission.replace_mutating_webhook_configuration(name, replacement)
        except ApiException as error:
            if error.status == 409:
                continue
            raise ConfigurationError(_refused("update", name, error)) from None
        logger.info("updated MutatingWebhookConfiguration %s", name)
        return
    raise ConfigurationError(f"MutatingWebhookConfiguration {name} kept changing; could not update it")


def _create(admission: Any, body: Mapping[str, Any]) -> None:
    name = body["metadata"]["name"]
    try:
        admission.create_mutating_webhook_configuration(dict(body))
    except ApiException as error:
        if error.status == 403:
            raise ConfigurationError(
                f"MutatingWebhookConfiguration {name} does not exist and this operator may not create it; "
                "the Helm chart creates it: run `helm upgrade` for the release (or create it empty)"
            ) from None
        raise ConfigurationError(_refused("create", name, error)) from None
    logger.info("created MutatingWebhookConfiguration %s", name)


def _refused(verb: str, name: str, error: ApiException) -> str:
    return f"could not {verb} MutatingWebhookConfiguration {name}: HTTP {error.status} {error.reason}"


def delete_configuration(api: client.ApiClient, name: str) -> bool:
    """Remove the configuration (uninstall, tests); False when it was not there."""
    try:
        client.AdmissionregistrationV1Api(api).delete_mutating_webhook_configuration(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
