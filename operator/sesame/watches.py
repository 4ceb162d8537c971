"""Everything the operator watches, in one place.

Kopf watches three kinds of object and keeps the latest state of each in an index (memory:
names, data keys, labels and statuses — never a Secret's value):

- TaskRuns                   `taskruns`      (namespace, name) → the TaskRun
- pods labelled sesame.dev/taskrun (a server-side label selector: no other pod reaches the
  operator)                  `taskrun_pods`  (namespace, label value) → each such pod's metadata and status
- Secrets                    `secret_inventory`  namespace → (name, SecretFacts)
                             `secret_refs`   (namespace, Secret name) → the TaskRuns that request it

Every watch-event of a TaskRun, of a pod labelled for it, or of a Secret a TaskRun refers to puts
that TaskRun's key on the controller's work queue; the reconcile reads the indexes afresh. The
admission webhook reads `secret_inventory` too. Kopf holds handlers back until every index has
seen its first full listing, so no reconcile ever decides on half a cluster.
"""

from __future__ import annotations

from typing import Any

import kopf

from sesame import naming
from sesame.controller.reconcile import Controller
from sesame.injection import SecretFacts
from sesame.requests import RequestError, parse_requests

CONTROLLER_MEMO_KEY = "sesame_controller"
TASKRUN = (naming.API_GROUP, naming.API_VERSION, naming.TASKRUN_PLURAL)
POD_STATUS_FIELDS = ("phase", "reason", "message", "startTime", "initContainerStatuses", "containerStatuses")


def controller_of(memo: Any) -> Controller:
    controller: Controller = memo[CONTROLLER_MEMO_KEY]
    return controller


# --- indexes ------------------------------------------------------------------------------------


@kopf.index(*TASKRUN)
async def taskruns(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """The TaskRun as last seen, without its managedFields (server bookkeeping, often the bulk)."""
    raw = dict(body)
    raw["metadata"] = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    return {(namespace or "", name): raw}


@kopf.index("", "v1", "pods")
async def taskrun_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Metadata and status of pods labelled for a TaskRun; their spec is not needed."""
    meta = body["metadata"]
    label = (meta.get("labels") or {}).get(naming.TASKRUN_LABEL)
    if not label:
        return {}
    view = {
        "metadata": {
            k: meta.get(k)
            for k in ("name", "namespace", "uid", "ownerReferences", "deletionTimestamp", "creationTimestamp")
        },
        "status": {k: v for k, v in (body.get("status") or {}).items() if k in POD_STATUS_FIELDS},
    }
    return {(meta.get("namespace") or "", label): view}


@kopf.index("", "v1", "secrets")
async def secret_inventory(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    """namespace → (Secret name, facts). The value bytes are dropped right here.

    A coroutine, though it awaits nothing: Kopf runs plain functions in its thread pool, a trip
    that costs more than this whole function, once for every Secret event."""
    return {namespace or "": (name, SecretFacts.of(body))}


@kopf.index(*TASKRUN)
async def secret_refs(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str]:
    """(namespace, Secret name) → the TaskRuns that request it: whom a Secret event concerns."""
    try:
        requests = parse_requests(spec.get("secrets"))
    except RequestError:
        return {}
    return {(namespace or "", request.secret_name): name for request in requests}


# --- watch-events → the work queue --------------------------------------------------------------


@kopf.on.event(*TASKRUN)
async def taskrun_event(
    type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    controller = controller_of(memo)
    key = (namespace or "", name)
    if type == "MODIFIED" and controller.is_own_echo(key, body):
        return
    controller.queue.add(key)


@kopf.on.event("", "v1", "pods")
async def pod_event(namespace: str | None, name: str, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    """The TaskRun the pod claims, and the one it is named after: a pod stripped of its label
    leaves the label selector with a last event that no longer carries it."""
    queue = controller_of(memo).queue
    queue.add((namespace or "", name))
    claimed = labels.get(naming.TASKRUN_LABEL)
    if claimed and claimed != name:
        queue.add((namespace or "", claimed))


@kopf.on.event("", "v1", "secrets")
async def secret_event(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    """A Secret appeared, changed or went away: every TaskRun that requests it looks again."""
    secret_refs: kopf.Index[tuple[str, str], str] = kwargs["secret_refs"]
    queue = controller_of(memo).queue
    for taskrun in secret_refs.get((namespace or "", name), ()):
        queue.add((namespace or "", taskrun))
