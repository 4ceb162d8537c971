"""What Secrets exist, per namespace: names and data keys only, never values.

A Kopf index fed by the Secret watch answers most questions from memory; the webhook may fall
back to a live read for a Secret created a moment ago that the watch has not delivered yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame.injection import Inventory

SecretIndex = Mapping[str, Iterable[tuple[str, frozenset[str]]]]


@kopf.index("", "v1", "secrets")
async def secret_inventory(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[str, tuple[str, frozenset[str]]]:
    """namespace → (secret name, data keys). The value bytes are dropped right here.

    A coroutine, though it awaits nothing: Kopf runs plain functions in its thread pool, a trip
    that costs more than this whole function, once for every Secret event."""
    return {namespace or "": (name, frozenset((body.get("data") or {}).keys()))}


def inventory_of(index: SecretIndex, namespace: str) -> dict[str, frozenset[str]]:
    return dict(index.get(namespace, ()))


def live_secret_keys(core: client.CoreV1Api, namespace: str, name: str) -> frozenset[str] | None:
    """Data keys of one Secret read from the API server; None when it does not exist."""
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return frozenset((secret.data or {}).keys())


def complete_inventory(
    inventory: Inventory, wanted: Iterable[str], core: client.CoreV1Api, namespace: str
) -> dict[str, frozenset[str]]:
    """The index, plus a live look at wanted Secrets the index does not know (watch lag)."""
    completed = dict(inventory)
    for name in wanted:
        if name not in completed:
            keys = live_secret_keys(core, namespace, name)
            if keys is not None:
                completed[name] = keys
    return completed
