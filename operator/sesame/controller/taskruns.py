"""Kopf handlers for TaskRuns: one pod per TaskRun with exactly the secrets it asked for.

Level-triggered: every TaskRun watch-event, every Secret change a waiting TaskRun depends on, and
every change of an owned pod leads to the same idempotent reconcile. No Kopf progress annotations,
no finalizers: the only writes are the pod, the TaskRun status and events.
"""

from __future__ import annotations

import contextvars
import functools
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import metrics, naming
from sesame.controller import status as st
from sesame.controller.pods import build_pod, controlled_by, pod_spec_of
from sesame.injection import Reason, direct_secret_references, inject, summarize
from sesame.kube.inventory import SecretIndex, inventory_of
from sesame.requests import RequestError, parse_requests

logger = logging.getLogger("sesame.controller")

MAX_ATTEMPTS = 12  # about five minutes of backoff, capped at 30 s between attempts
WAITING_REASONS = frozenset({Reason.SECRET_NOT_FOUND, Reason.KEY_NOT_FOUND})


@dataclass
class Waiting:
    """TaskRuns held back by a missing Secret, so a Secret event wakes exactly those."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_namespace: dict[str, dict[str, tuple[frozenset[str], dict[str, Any]]]] = field(default_factory=dict)

    def hold(self, namespace: str, name: str, secrets: frozenset[str], body: Mapping[str, Any]) -> None:
        with self.lock:
            self.by_namespace.setdefault(namespace, {})[name] = (secrets, dict(body))

    def release(self, namespace: str, name: str) -> None:
        with self.lock:
            held = self.by_namespace.get(namespace)
            if held and held.pop(name, None) is not None and not held:
                del self.by_namespace[namespace]

    def waiting_for(self, namespace: str, secret: str) -> list[dict[str, Any]]:
        with self.lock:
            held = self.by_namespace.get(namespace, {})
            return [body for secrets, body in held.values() if secret in secrets]

    def count(self) -> int:
        with self.lock:
            return sum(len(held) for held in self.by_namespace.values())


@dataclass
class Retries:
    """Work that failed on a transient API error, retried with backoff by one background thread.

    Kopf never retries watch-event handlers, so without this a 503 during an API server restart
    would leave a TaskRun without its pod until its next watch-event.
    """

    condition: threading.Condition = field(default_factory=threading.Condition)
    queue: list[tuple[float, int, str, Callable[[], None], int]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    stopped: bool = False

    def schedule(self, key: str, work: Callable[[], None], attempt: int = 0) -> None:
        if attempt == 0:
            # Run it in the scheduling handler's context: kopf.event() needs Kopf's context
            # variables, and a plain thread has none (the retry would fail with LookupError).
            work = functools.partial(contextvars.copy_context().run, work)
        delay = min(30.0, 0.5 * 2**attempt)
        with self.condition:
            heapq.heappush(self.queue, (time.monotonic() + delay, next(self.counter), key, work, attempt))
            self.condition.notify()

    def run(self) -> None:
        while True:
            with self.condition:
                while not self.stopped and (not self.queue or self.queue[0][0] > time.monotonic()):
                    timeout = self.queue[0][0] - time.monotonic() if self.queue else None
                    self.condition.wait(timeout)
                if self.stopped:
                    return
                _, _, key, work, attempt = heapq.heappop(self.queue)
            try:
                work()
            except Exception as error:
                if attempt + 1 >= MAX_ATTEMPTS or not transient(error):
                    logger.error(
                        "giving up on %s after %s (attempt %d)", key, type(error).__name__, attempt + 1
                    )
                    continue
                logger.warning("retrying %s after %s", key, type(error).__name__)
                self.schedule(key, work, attempt + 1)

    def stop(self) -> None:
        with self.condition:
            self.stopped = True
            self.condition.notify_all()


def transient(error: BaseException) -> bool:
    """API errors worth retrying: throttling, server errors, connection trouble."""
    if isinstance(error, ApiException):
        return error.status in (None, 0, 408, 409, 429, 500, 502, 503, 504)
    return isinstance(error, (OSError, ConnectionError, TimeoutError)) or "urllib3" in type(error).__module__


@dataclass
class Controller:
    """What the handlers share, kept in Kopf's memo."""

    api: client.ApiClient
    waiting: Waiting = field(default_factory=Waiting)
    retries: Retries = field(default_factory=Retries)
    locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def lock_for(self, namespace: str, name: str) -> threading.Lock:
        with self.locks_guard:
            return self.locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self.locks_guard:
            self.locks.pop((namespace, name), None)
        self.waiting.release(namespace, name)

    def patch_status(self, taskrun: Mapping[str, Any], new_status: Mapping[str, Any]) -> None:
        meta = taskrun["metadata"]
        try:
            self.custom.patch_namespaced_custom_object_status(
                naming.API_GROUP,
                naming.API_VERSION,
                meta["namespace"],
                naming.TASKRUN_PLURAL,
                meta["name"],
                {"status": dict(new_status)},
            )
        except ApiException as error:
            if error.status != 404:  # a TaskRun deleted meanwhile needs no status
                raise

    def to_dict(self, model: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.api.sanitize_for_serialization(model)
        return result


def post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the TaskRun (queued by Kopf; names only, never values)."""
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


def controller_of(memo: Any) -> Controller:
    controller: Controller = memo["sesame_controller"]
    return controller


def reconcile(controller: Controller, taskrun: Mapping[str, Any], secrets: SecretIndex) -> None:
    """Bring one TaskRun one step closer to "its pod exists with its secrets"."""
    meta = taskrun["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        with controller.lock_for(namespace, name):
            _reconcile(controller, taskrun, secrets)
    except Exception as error:
        if not transient(error):
            raise
        logger.warning("TaskRun %s/%s: transient %s; will retry", namespace, name, type(error).__name__)
        controller.retries.schedule(
            f"taskrun {namespace}/{name}", lambda: _retry_reconcile(controller, taskrun, secrets)
        )


def _retry_reconcile(controller: Controller, taskrun: Mapping[str, Any], secrets: SecretIndex) -> None:
    """Retry with the freshest TaskRun, since the failed attempt may have half-succeeded."""
    meta = taskrun["metadata"]
    try:
        fresh = cast(
            dict[str, Any],
            controller.custom.get_namespaced_custom_object(
                naming.API_GROUP, naming.API_VERSION, meta["namespace"], naming.TASKRUN_PLURAL, meta["name"]
            ),
        )
    except ApiException as error:
        if error.status == 404:
            controller.forget(meta["namespace"], meta["name"])
            return
        raise
    with controller.lock_for(meta["namespace"], meta["name"]):
        _reconcile(controller, fresh, secrets)


def _reconcile(controller: Controller, taskrun: Mapping[str, Any], secrets: SecretIndex) -> None:
    meta = taskrun["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 1)
    previous = taskrun.get("status") or {}
    if meta.get("deletionTimestamp"):
        controller.forget(namespace, name)
        return
    if previous.get("podName") and previous.get("observedGeneration") == generation:
        controller.waiting.release(namespace, name)
        return  # the pod exists; its phases arrive through the pod handler

    spec = taskrun.get("spec") or {}
    try:
        requests = parse_requests(spec.get("secrets"))
    except RequestError as error:
        _hold(controller, taskrun, Reason.INVALID_REQUEST.value, str(error), generation)
        return
    pod_spec = pod_spec_of(taskrun)
    template_problems = direct_secret_references(pod_spec)
    if template_problems:
        _hold(
            controller, taskrun, template_problems[0].reason.value, template_problems[0].message, generation
        )
        return

    result = inject(pod_spec, requests, inventory_of(secrets, namespace), namespace)
    if not result.ok:
        problems = result.problems
        message = summarize(problems)
        for problem in problems:
            metrics.INJECTION_PROBLEMS.labels(reason=problem.reason.value, source="taskrun").inc()
        waiting_on = frozenset(p.secret for p in problems if p.reason in WAITING_REASONS and p.secret)
        if waiting_on and all(p.reason in WAITING_REASONS for p in problems):
            controller.waiting.hold(namespace, name, waiting_on, taskrun)
        else:
            controller.waiting.release(namespace, name)
        _hold(controller, taskrun, problems[0].reason.value, message, generation, keep_waiting=True)
        return

    controller.waiting.release(namespace, name)
    assert result.pod_spec is not None
    pod = build_pod(taskrun, result.pod_spec, result.deliveries)
    try:
        body: Any = pod
        created = controller.to_dict(controller.core.create_namespaced_pod(namespace, body))
        metrics.observe_pod_created(meta.get("creationTimestamp"))
        post_event(taskrun, "Normal", "PodCreated", f"created pod {name!r}")
    except ApiException as error:
        if error.status != 409:
            _pod_not_created(controller, taskrun, error, generation)
            return
        created = controller.to_dict(controller.core.read_namespaced_pod(name, namespace))
        if not controlled_by(created, meta["uid"]):
            message = (
                f"a pod named {name!r} already exists in namespace {namespace!r} and is not owned by this "
                "TaskRun; delete that pod or rename the TaskRun"
            )
            _write(controller, taskrun, st.pod_failed_status(previous, "PodNameTaken", message, generation))
            post_event(taskrun, "Warning", "PodNameTaken", message)
            return
        logger.info("adopted existing pod %s/%s", namespace, name)
    deliveries = st.deliveries_to_status(result.deliveries)
    _write(controller, taskrun, st.status_from_pod(previous, created, name, deliveries, generation))


def _write(controller: Controller, taskrun: Mapping[str, Any], new_status: Mapping[str, Any]) -> None:
    if not st.same_status(taskrun.get("status"), new_status):
        controller.patch_status(taskrun, new_status)
        phase = new_status.get("phase")
        if phase in st.TERMINAL_PHASES and (taskrun.get("status") or {}).get("phase") != phase:
            metrics.TASKRUNS_FINISHED.labels(phase=phase, reason=new_status["conditions"][-1]["reason"]).inc()


def _hold(
    controller: Controller,
    taskrun: Mapping[str, Any],
    reason: str,
    message: str,
    generation: int,
    keep_waiting: bool = False,
) -> None:
    """No pod: say why in the status and, once per distinct reason, in a Warning event
    (a message that only changes because one of several missing secrets arrived is no news)."""
    meta = taskrun["metadata"]
    if not keep_waiting:
        controller.waiting.release(meta["namespace"], meta["name"])
    previous = taskrun.get("status") or {}
    new_status = st.waiting_status(previous, reason, message, generation)
    if not st.same_status(previous, new_status):
        controller.patch_status(taskrun, new_status)
        old_reason = next(
            (c.get("reason") for c in previous.get("conditions") or [] if c.get("type") == st.SECRETS_READY),
            None,
        )
        if old_reason != reason:
            post_event(taskrun, "Warning", reason, message)
            logger.info("TaskRun %s/%s waits: %s", meta["namespace"], meta["name"], reason)


def _pod_not_created(
    controller: Controller, taskrun: Mapping[str, Any], error: ApiException, generation: int
) -> None:
    """The API server refused the pod: permanent (invalid template) or worth a retry (5xx, 429)."""
    if transient(error):
        raise error
    try:
        server_message = json.loads(error.body or "{}").get("message") or error.reason
    except (ValueError, AttributeError):
        server_message = error.reason
    reason = "Forbidden" if error.status == 403 else "PodInvalid"
    message = f"the API server refused the pod: {server_message}"
    previous = taskrun.get("status") or {}
    new_status = st.pod_failed_status(previous, reason, message, generation)
    if not st.same_status(previous, new_status):
        controller.patch_status(taskrun, new_status)
        post_event(taskrun, "Warning", reason, message)


# --- Kopf registrations -------------------------------------------------------------------------


@kopf.on.event(naming.API_GROUP, naming.API_VERSION, naming.TASKRUN_PLURAL)
def taskrun_event(type: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    controller = controller_of(memo)
    if type == "DELETED":
        controller.forget(body["metadata"]["namespace"], body["metadata"]["name"])
        return
    reconcile(controller, dict(body), kwargs["secret_inventory"])


@kopf.index(naming.API_GROUP, naming.API_VERSION, naming.TASKRUN_PLURAL)
def taskrun_status(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """(namespace, name) → what the pod mirror needs: generation, uid and the current status."""
    meta = body["metadata"]
    return {
        (namespace or "", name): (
            meta.get("uid"),
            int(meta.get("generation") or 1),
            dict(body.get("status") or {}),
        )
    }


@kopf.on.event("", "v1", "secrets")
def secret_event(type: str, namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    """A Secret appeared or changed: retry exactly the TaskRuns that wait for it."""
    if type == "DELETED" or not namespace:
        return
    controller = controller_of(memo)
    for taskrun in controller.waiting.waiting_for(namespace, name):
        reconcile(controller, taskrun, kwargs["secret_inventory"])


@kopf.on.event("", "v1", "pods", labels={naming.TASKRUN_LABEL: kopf.PRESENT})
def pod_event(type: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Mirror the phase of an owned pod into its TaskRun."""
    meta = body["metadata"]
    owner = next(
        (
            ref
            for ref in meta.get("ownerReferences") or []
            if ref.get("controller")
            and ref.get("kind") == "TaskRun"
            and ref.get("apiVersion") == f"{naming.API_GROUP}/{naming.API_VERSION}"
        ),
        None,
    )
    if owner is None:
        return
    known = list(kwargs["taskrun_status"].get((meta["namespace"], owner["name"]), ()))
    if not known:
        return
    uid, generation, previous = known[0]
    if uid != owner.get("uid"):
        return
    pod = None if type == "DELETED" else dict(body)
    try:
        deliveries = json.loads((meta.get("annotations") or {}).get(naming.INJECTED_ANNOTATION) or "[]")
    except ValueError:
        deliveries = []
    new_status = st.status_from_pod(previous, pod, meta["name"], deliveries, generation)
    taskrun = {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"namespace": meta["namespace"], "name": owner["name"], "uid": uid},
        "status": previous,
    }
    controller = controller_of(memo)
    if st.same_status(previous, new_status):
        return
    try:
        _write(controller, taskrun, new_status)
    except Exception as error:
        if not transient(error):
            raise
        key = f"pod {meta['namespace']}/{meta['name']}"
        controller.retries.schedule(key, lambda: _write(controller, taskrun, new_status))
        return
    phase = new_status["phase"]
    if phase != previous.get("phase") and phase in st.TERMINAL_PHASES:
        post_event(
            taskrun,
            "Normal" if phase == "Succeeded" else "Warning",
            new_status["conditions"][-1]["reason"],
            new_status["message"],
        )
