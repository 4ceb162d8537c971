"""What Secrets exist, per namespace: names, data keys and consent labels — never values.

A Kopf index fed by the Secret watch (sesame.watches) answers most questions from memory; the
webhook may read a Secret live when the watch has not delivered it yet. Either way the value bytes
are dropped the moment `SecretFacts.of` has read the key names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kubernetes.client.exceptions import ApiException

from sesame.injection import Inventory, SecretFacts
from sesame.kube.rest import JsonApi, secrets_path

SecretIndex = Mapping[str, Iterable[tuple[str, SecretFacts]]]


def inventory_of(index: SecretIndex, namespace: str) -> dict[str, SecretFacts]:
    return dict(index.get(namespace, ()))


def live_secret(api: JsonApi, namespace: str, name: str) -> SecretFacts | None:
    """One Secret read from the API server (None when it does not exist), reduced to its facts."""
    try:
        return SecretFacts.of(api.get(secrets_path(namespace, name)))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def complete_inventory(
    inventory: Inventory, wanted: Iterable[str], api: JsonApi, namespace: str
) -> dict[str, SecretFacts]:
    """The index, plus a live look at wanted Secrets the index does not know (watch lag)."""
    completed = dict(inventory)
    for name in wanted:
        if name not in completed:
            facts = live_secret(api, namespace, name)
            if facts is not None:
                completed[name] = facts
    return completed
