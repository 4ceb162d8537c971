"""API requests the cluster served, from kube-apiserver's `/metrics` (`apiserver_request_total`).

Scraped with the kubeconfig's own credentials (the admin client certificate on the local control
plane) and diffed around a phase. The counter has no user label, so the caller subtracts what the
benchmark client itself sent; everything left on pods, TaskRuns and events is the operator's.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import NamedTuple

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame.kube.rest import JsonApi

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# What the operator writes on its happy path. Deletes are left out: the operator never deletes,
# and the namespace controller's deletes (of an earlier run's namespaces) would be counted as its.
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY"})


class Key(NamedTuple):
    verb: str
    resource: str  # "pods", "taskruns", "taskruns/status", "events", ...


def scrape(api: client.ApiClient) -> Counter[Key]:
    try:
        text = JsonApi(api).raw("GET", "/metrics", accept="text/plain").decode()
    except ApiException as error:
        raise RuntimeError(
            f"GET /metrics: HTTP {error.status} (the kubeconfig's user may not read it)"
        ) from None
    counts: Counter[Key] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[Key(labels.get("verb", ""), resource)] += int(float(match["value"]))
    return counts


def diff(after: Counter[Key], before: Counter[Key]) -> Counter[Key]:
    result = Counter(after)
    result.subtract(before)
    return Counter({key: value for key, value in result.items() if value > 0})


def by_verb_resource(counts: Counter[Key], resources: frozenset[str]) -> dict[str, int]:
    """{"POST pods": 1000, …} for the given resources, sorted for reading."""
    return {
        f"{key.verb} {key.resource}": value
        for key, value in sorted(counts.items())
        if key.resource in resources and key.verb != "WATCH"
    }
