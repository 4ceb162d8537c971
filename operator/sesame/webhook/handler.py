"""The pod admission handler: secrets for pods that are not TaskRun pods (DESIGN.md §4).

A pod labelled `sesame.dev/inject: "true"` lists its requests in the annotation
`sesame.dev/secrets` (the `spec.secrets` shape, as JSON). At CREATE the API server sends it here;
the same `requests` + `injection` code as the TaskRun controller completes its spec, or the create
is DENIED with one line that names the problem and the fix. Nothing here has side effects, so
dry-run requests are answered exactly like real ones.

Names only: the inventory holds Secret names and data keys, messages and logs hold names, the
patch holds `secretKeyRef`s and projected-volume items — never a value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import metrics, naming
from sesame.injection import (
    Delivery,
    Inventory,
    Problem,
    Reason,
    SecretFacts,
    inject,
    injected_annotation,
    summarize,
)
from sesame.kube.inventory import SecretIndex, complete_inventory, inventory_of
from sesame.kube.rest import JsonApi
from sesame.requests import RequestError, SecretRequest, parse_annotation
from sesame.webhook.options import WebhookOptions

logger = logging.getLogger("sesame.webhook")

HANDLER_ID = "inject"  # also the last path component of the webhook URL
MEMO_KEY = "sesame_webhook"
SOURCE = "webhook"  # the `source` label of sesame_injection_problems_total
# As many as a TaskRun's spec.secrets may hold (the CRD's maxItems).
MAX_REQUESTS = 256
# Secrets read live per admission when the watch may lag; beyond that the index answers alone, so
# one pod cannot make the webhook issue hundreds of API reads.
MAX_LIVE_READS = 8


class Refusal(Exception):
    """The pod cannot be admitted; `message` is one line for the user, names only."""

    def __init__(self, message: str, code: int, reasons: Sequence[Reason]) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reasons = list(reasons)


@dataclass(frozen=True)
class Admission:
    """What to change in the pod: a merge patch of whole top-level spec fields, plus the annotation."""

    patch: dict[str, Any]
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def changes_spec(self) -> bool:
        return bool(self.patch.get("spec"))


def requests_of(pod: Mapping[str, Any]) -> list[SecretRequest]:
    """The pod's requests, from its annotation; RequestError when they are malformed."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return parse_annotation(annotations.get(naming.SECRETS_ANNOTATION))


def stale_names(requests: Iterable[SecretRequest], inventory: Inventory) -> list[str]:
    """Secrets the index does not know, or knows without the wanted data key or consent: read them
    live before refusing, because the watch may lag a Secret created or updated a moment ago."""
    names: dict[str, None] = {}
    for request in requests:
        facts = inventory.get(request.secret_name)
        if facts is None or not facts.usable or request.data_key not in facts.keys:
            names[request.secret_name] = None
    return list(names)[:MAX_LIVE_READS]


def refreshed(
    inventory: Inventory, names: Sequence[str], api: JsonApi, namespace: str
) -> dict[str, SecretFacts]:
    """The inventory with `names` replaced by what the API server says now (absent if deleted)."""
    kept = {name: facts for name, facts in inventory.items() if name not in names}
    return complete_inventory(kept, names, api, namespace)


def refusal_for(problems: Sequence[Problem]) -> Refusal:
    first = problems[0]
    return Refusal(summarize(problems), 403 if first.reason.waits else 400, [p.reason for p in problems])


def review(
    pod: Mapping[str, Any], namespace: str, requests: Sequence[SecretRequest], inventory: Inventory
) -> Admission:
    """Pure: the patch that delivers every request to the pod, or a Refusal."""
    spec = pod.get("spec") or {}
    result = inject(spec, requests, inventory, namespace)
    if not result.ok or result.pod_spec is None:
        raise refusal_for(result.problems or [Problem(Reason.INVALID_REQUEST, "injection failed")])
    new_spec = result.pod_spec
    spec_patch = {
        name: new_spec.get(name)
        for name in sorted(set(spec) | set(new_spec))
        if new_spec.get(name) != spec.get(name)
    }
    patch: dict[str, Any] = {
        "metadata": {"annotations": {naming.INJECTED_ANNOTATION: injected_annotation(result.deliveries)}}
    }
    if spec_patch:
        patch["spec"] = spec_patch
    return Admission(patch=patch, deliveries=result.deliveries)


def _pod_name(pod: Mapping[str, Any], namespace: str) -> str:
    meta = pod.get("metadata") or {}
    name = meta.get("name") or f"{meta.get('generateName') or ''}<generated>"
    return f"{namespace}/{name}"


@dataclass
class WebhookRuntime:
    """What the handler needs at admission time, put into Kopf's memo at startup."""

    api: client.ApiClient
    options: WebhookOptions

    @property
    def json(self) -> JsonApi:
        return JsonApi(self.api)


def _in_scope(namespace: str, options: WebhookOptions) -> bool:
    """The same namespaces the webhook configuration sends (a forged review may name any other)."""
    if namespace in options.excluded_namespaces:
        return False
    return not options.only_namespaces or namespace in options.only_namespaces


async def _admit(
    body: Mapping[str, Any], namespace: str | None, index: SecretIndex, runtime: WebhookRuntime | None
) -> Admission:
    if not namespace:
        # The webhook server fills it from the AdmissionReview request; without one, refuse.
        raise Refusal("Sesame could not tell the pod's namespace; set metadata.namespace", 400, [])
    if body.get("kind") not in (None, "Pod"):
        raise Refusal("Sesame's webhook completes pods only", 400, [])
    if runtime is not None and not _in_scope(namespace, runtime.options):
        raise Refusal(f"Sesame does not serve namespace {namespace!r}", 403, [])
    try:
        requests = requests_of(body)
    except RequestError as error:
        raise Refusal(str(error), 400, [Reason.INVALID_REQUEST]) from None
    if len(requests) > MAX_REQUESTS:
        raise Refusal(
            f"annotation {naming.SECRETS_ANNOTATION} asks for {len(requests)} secrets; at most "
            f"{MAX_REQUESTS} are allowed per pod",
            400,
            [Reason.INVALID_REQUEST],
        )
    inventory: Inventory = inventory_of(index, namespace)
    stale = stale_names(requests, inventory)
    if stale:
        if runtime is None:
            raise Refusal("Sesame's webhook is not ready yet; try again in a moment", 503, [])
        try:
            inventory = await asyncio.to_thread(refreshed, inventory, stale, runtime.json, namespace)
        except ApiException as error:
            # Only the status: an API error's body is not ours to repeat.
            raise Refusal(
                f"Sesame could not read Secrets {', '.join(map(repr, stale))} in namespace {namespace!r} "
                f"(API status {error.status}); check the operator's RBAC and try again",
                503,
                [],
            ) from None
    return review(body, namespace, requests, inventory)


@kopf.on.mutate("", "v1", "pods", operations=["CREATE"], labels={naming.INJECT_LABEL: "true"}, id=HANDLER_ID)
async def inject_pod(
    body: kopf.Body,
    namespace: str | None,
    patch: kopf.Patch,
    dryrun: bool,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Complete a labelled pod with its secrets, or deny its creation (fail closed)."""
    started = time.perf_counter()
    result = "denied"
    where = _pod_name(body, namespace or "?")
    try:
        admission = await _admit(body, namespace, kwargs["secret_inventory"], memo.get(MEMO_KEY))
    except Refusal as refusal:
        for reason in refusal.reasons:
            metrics.INJECTION_PROBLEMS.labels(reason=reason.value, source=SOURCE).inc()
        raise kopf.AdmissionError(refusal.message, code=refusal.code) from None
    except Exception as error:
        logger.exception("admission of pod %s failed", where)
        raise kopf.AdmissionError(
            f"Sesame could not complete the pod's secrets (internal error {type(error).__name__}); "
            "see the operator's log",
            code=500,
        ) from None
    else:
        for key, value in admission.patch.items():
            patch[key] = value
        result = "allowed" if admission.changes_spec else "skipped"
        logger.info(
            "%spod %s: %s secrets %s",
            "dry-run " if dryrun else "",
            where,
            "injected" if admission.changes_spec else "nothing to change for",
            ", ".join(f"{d.key} ({d.delivery})" for d in admission.deliveries) or "(none requested)",
        )
    finally:
        metrics.WEBHOOK_ADMISSIONS.labels(result=result).inc()
        metrics.WEBHOOK_LATENCY.observe(time.perf_counter() - started)
