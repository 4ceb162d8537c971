"""Kopf handlers for TaskRuns: one pod per TaskRun with exactly the secrets it asked for.

Level-triggered: every TaskRun watch-event, every Secret change a waiting TaskRun depends on, and
every change of an owned pod leads to the same idempotent reconcile. No Kopf progress annotations,
no finalizers: the only writes are the pod, the TaskRun status and events.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sesame import metrics, naming
from sesame.controller import status as st
from sesame.controller.api import JsonApi
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
    executor: Executor | None = None  # Kopf's handler thread pool; None: the event loop's default
    waiting: Waiting = field(default_factory=Waiting)
    retries: Retries = field(default_factory=Retries)
    locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    locks_guard: threading.Lock = field(default_factory=threading.Lock)
    # The last status this process wrote per TaskRun, until the TaskRun's watch-event that carries
    # it arrives: until then the index still shows the older status, and a pod event in between
    # would write the same status a second time.
    written: dict[tuple[str, str], tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    written_guard: threading.Lock = field(default_factory=threading.Lock)
    json: JsonApi = field(init=False)

    def __post_init__(self) -> None:
        self.json = JsonApi(self.api)

    def lock_for(self, namespace: str, name: str) -> threading.Lock:
        with self.locks_guard:
            return self.locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self.locks_guard:
            self.locks.pop((namespace, name), None)
        with self.written_guard:
            self.written.pop((namespace, name), None)
        self.waiting.release(namespace, name)

    def patch_status(self, taskrun: Mapping[str, Any], new_status: Mapping[str, Any]) -> None:
        meta = taskrun["metadata"]
        try:
            self.json.patch_taskrun_status(meta["namespace"], meta["name"], dict(new_status))
        except ApiException as error:
            if error.status != 404:  # a TaskRun deleted meanwhile needs no status
                raise
            return
        with self.written_guard:
            self.written[(meta["namespace"], meta["name"])] = (meta.get("uid") or "", st.essence(new_status))

    def just_wrote(self, namespace: str, name: str, uid: str, status: Mapping[str, Any]) -> bool:
        """Whether this status (ignoring timestamps) is the one written last, not yet seen back."""
        with self.written_guard:
            return self.written.get((namespace, name)) == (uid, st.essence(status))

    def seen(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """A TaskRun watch-event: the index now holds this status; drop the write it carries."""
        with self.written_guard:
            written = self.written.get((namespace, name))
            if written is not None and written[1] == st.essence(status):
                del self.written[(namespace, name)]

    async def offload(self, work: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (API calls) in the handler thread pool, with Kopf's context variables."""
        call = functools.partial(contextvars.copy_context().run, work, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)


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
        fresh = controller.json.read_taskrun(meta["namespace"], meta["name"])
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
        controller.json.create_pod(namespace, pod)
    except ApiException as error:
        if error.status != 409:
            _pod_not_created(controller, taskrun, error, generation)
            return
        created = controller.json.read_pod(namespace, name)
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
        return
    # The status (podName, PodCreated, deliveries) follows from the pod's ADDED event in
    # `pod_event`, the one writer of a status that has a pod: writing it here as well raced with
    # that event and wrote every status twice.
    metrics.observe_pod_created(meta.get("creationTimestamp"))
    post_event(taskrun, "Normal", "PodCreated", f"created pod {name!r}")


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


# The handlers are coroutines: most watch-events need no API call (a TaskRun that already has its
# pod, a Secret nobody waits for, a pod whose phase did not change), and answering those on the
# event loop saves a trip through the thread pool for each. Blocking work goes to the pool.


@kopf.on.event(naming.API_GROUP, naming.API_VERSION, naming.TASKRUN_PLURAL)
async def taskrun_event(type: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    controller = controller_of(memo)
    meta = body["metadata"]
    if type == "DELETED":
        controller.forget(meta["namespace"], meta["name"])
        return
    status = body.get("status") or {}
    controller.seen(meta["namespace"], meta["name"], status)
    if (
        not meta.get("deletionTimestamp")
        and status.get("podName")
        and status.get("observedGeneration") == int(meta.get("generation") or 1)
    ):
        controller.waiting.release(meta["namespace"], meta["name"])
        return  # the pod exists; its phases arrive through the pod handler (as in _reconcile)
    await controller.offload(reconcile, controller, dict(body), kwargs["secret_inventory"])


@kopf.index(naming.API_GROUP, naming.API_VERSION, naming.TASKRUN_PLURAL)
async def taskrun_status(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Any]:
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
async def secret_event(type: str, namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    """A Secret appeared or changed: retry exactly the TaskRuns that wait for it."""
    if type == "DELETED" or not namespace:
        return
    controller = controller_of(memo)
    waiting = controller.waiting.waiting_for(namespace, name)
    if waiting:
        await controller.offload(_reconcile_all, controller, waiting, kwargs["secret_inventory"])


def _reconcile_all(controller: Controller, taskruns: list[dict[str, Any]], secrets: SecretIndex) -> None:
    for taskrun in taskruns:
        reconcile(controller, taskrun, secrets)


@kopf.on.event("", "v1", "pods", labels={naming.TASKRUN_LABEL: kopf.PRESENT})
async def pod_event(type: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Mirror the phase of an owned pod into its TaskRun (its first status with a pod, too)."""
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
    controller = controller_of(memo)
    if st.same_status(previous, new_status) or controller.just_wrote(
        meta["namespace"], owner["name"], uid, new_status
    ):
        return
    taskrun = {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"namespace": meta["namespace"], "name": owner["name"], "uid": uid},
        "status": previous,
    }
    await controller.offload(_mirror, controller, taskrun, meta, new_status)


def _mirror(
    controller: Controller, taskrun: dict[str, Any], pod_meta: Mapping[str, Any], new_status: dict[str, Any]
) -> None:
    previous = taskrun["status"]
    try:
        _write(controller, taskrun, new_status)
    except Exception as error:
        if not transient(error):
            raise
        key = f"pod {pod_meta['namespace']}/{pod_meta['name']}"
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
