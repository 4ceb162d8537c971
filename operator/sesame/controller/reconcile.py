"""One reconcile of one TaskRun: read what the operator sees now → decide (pure) → write.

The workers take keys from the work queue (sesame.controller.queue), one worker per key at a
time. A reconcile never replays an earlier state: it reads the TaskRun, its pods and the
namespace's Secrets from the watch indexes as they are at that moment, lets `decide` say what the
world should look like, and writes either the pod — then the key goes to the back of the queue and
its next pass records the pod in the status, so a burst of new runs gets its pods before anyone's
status — or the status (only when it differs) and its events. Any failure puts the key back with
backoff; the retry reads afresh."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from sesame import metrics, naming
from sesame.controller import status as st
from sesame.controller.decide import (
    EXPECTATION_SECONDS,
    Decision,
    Event,
    Observed,
    Policy,
    decide,
    events_between,
)
from sesame.controller.queue import Key, WorkQueue
from sesame.kube.inventory import SecretIndex, inventory_of
from sesame.kube.rest import JsonApi, events_path, pods_path, taskruns_path

logger = logging.getLogger("sesame.controller")
T = TypeVar("T")
# A pod name held by a pod Sesame does not watch (no TaskRun label) frees up unseen: look again.
FOREIGN_POD_RECHECK = 15.0
EVENT_MESSAGE_LIMIT = 1024


@dataclass
class Indexes:
    """The Kopf indexes a reconcile reads (sesame.watches fills them): latest state, names only."""

    taskruns: Mapping[Key, Iterable[dict[str, Any]]]
    pods: Mapping[Key, Iterable[dict[str, Any]]]  # by (namespace, sesame.dev/taskrun label)
    secrets: SecretIndex


def transient(error: BaseException) -> bool:
    """API errors worth retrying: throttling, server errors, connection trouble."""
    if isinstance(error, ApiException):
        return error.status in (None, 0, 408, 409, 429, 500, 502, 503, 504)
    return isinstance(error, (OSError, ConnectionError, TimeoutError)) or "urllib3" in type(error).__module__


def _server_message(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason or f"HTTP {error.status}")


@dataclass
class Controller:
    """The TaskRun controller: a work queue, its workers, and what they remember between passes."""

    api: JsonApi
    executor: Executor | None = None
    policy: Policy = field(default_factory=Policy)
    queue: WorkQueue = field(default_factory=WorkQueue)
    indexes: Indexes | None = None
    # Pods this process created and the status does not record yet:
    # TaskRun key -> (TaskRun uid, pod uid, deadline).
    expected: dict[Key, tuple[str, str, float]] = field(default_factory=dict)
    # The last status this process wrote, with the resourceVersion it was computed from: until
    # the watch delivers the write, the index still holds the older status.
    written: dict[Key, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    reported: dict[Key, set[str]] = field(default_factory=dict)  # forged pods already reported
    waiting: set[Key] = field(default_factory=set)  # TaskRuns held by a Secret (the gauge)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    host: str = field(default_factory=lambda: os.environ.get("HOSTNAME") or "sesame")

    # --- workers ---------------------------------------------------------------------------

    def start(self, count: int) -> None:
        self.workers = [asyncio.create_task(self._work(), name=f"sesame-worker-{i}") for i in range(count)]

    async def stop(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.queue.close()

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = self.queue.retry(key)
                level = logging.WARNING if transient(error) else logging.ERROR
                detail = f"HTTP {error.status}" if isinstance(error, ApiException) else type(error).__name__
                logger.log(level, "TaskRun %s/%s: %s; retrying in %.1f s", *key, detail, delay)
                if level == logging.ERROR:
                    logger.debug("TaskRun %s/%s: unexpected error", *key, exc_info=True)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        """Blocking API work in the thread pool (the event loop keeps serving the watches)."""
        call = functools.partial(contextvars.copy_context().run, work, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    # --- reading ---------------------------------------------------------------------------

    def observe(self, key: Key) -> Observed | None:
        """What the operator sees of this TaskRun now (None: it is gone)."""
        assert self.indexes is not None, "the watches have not started"
        found = list(self.indexes.taskruns.get(key, ()))
        if not found:
            return None
        taskrun = found[0]
        written = self.written.get(key)
        if written is not None:
            if written[0] == taskrun["metadata"].get("resourceVersion"):
                taskrun = {**taskrun, "status": written[1]}  # the watch has not caught up yet
            else:
                del self.written[key]
        labelled = list(self.indexes.pods.get(key, ()))
        pod = next((p for p in labelled if p["metadata"]["name"] == key[1]), None)
        created_uid = self._created_uid(key, taskrun)
        return Observed(
            taskrun=taskrun,
            pod=pod,
            labelled=labelled,
            secrets=inventory_of(self.indexes.secrets, key[0]),
            policy=self.policy,
            created_uid=created_uid,
        )

    def _created_uid(self, key: Key, taskrun: Mapping[str, Any]) -> str | None:
        """The pod this process created for the run, until its status records it (`_write_status`
        ends the expectation then) or for too long."""
        expected = self.expected.get(key)
        if expected is None:
            return None
        run_uid, pod_uid, deadline = expected
        if run_uid != taskrun["metadata"]["uid"] or deadline < time.monotonic():
            del self.expected[key]
            return None
        return pod_uid

    # --- one pass --------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        observed = self.observe(key)
        if observed is None:
            self.forget(key)
            return
        decision = decide(observed, st.now())
        if observed.pod is None and (decision.status or {}).get("reason") == "PodDeleted":
            # The pod index may lag the TaskRun index: a watch that restarts (a replica resuming
            # after a peering pause, an API server restart) lists TaskRuns and pods in any order.
            # A deletion is believed only when the API server confirms the labelled pod is gone
            # (one stripped of its label is gone to the operator, which watches labelled pods).
            existing = await self._read_pod(key)
            labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
            if existing is not None and labels.get(naming.TASKRUN_LABEL) == key[1]:
                observed = dataclasses.replace(
                    observed, pod=existing, labelled=[*observed.labelled, existing]
                )
                decision = decide(observed, st.now())
        await self._report_forged(key, observed, decision)
        status, events = decision.status, decision.events
        if decision.pod is not None:
            status = await self._create_pod(key, observed, decision)
            if status is not None:  # refused, or the name is held: say that
                events = events_between(observed.taskrun.get("status") or {}, status)
        if status is None:
            return
        await self._write_status(key, observed, status)
        self._count(key, observed, status, decision)
        for event in events:
            await self._post_event(observed.taskrun, event)

    async def _create_pod(self, key: Key, observed: Observed, decision: Decision) -> dict[str, Any] | None:
        """Create the pod. None when made: the key goes to the back of the queue, and its next
        pass writes the status (so in a burst every waiting run gets its pod before anyone's
        status is written). Otherwise the status that says why there is no pod."""
        assert decision.pod is not None
        taskrun = observed.taskrun
        try:
            created = await self._call(self.api.create, pods_path(key[0]), decision.pod)
        except ApiException as error:
            if error.status == 409:
                # Not in our watch, yet it exists: a pod without Sesame's label holds the name
                # (or the watch lags). Decide again on what is really there.
                existing = await self._read_pod(key)
                if existing is None:
                    raise
                again = decide(
                    Observed(taskrun, existing, [existing], observed.secrets, observed.policy), st.now()
                )
                self.queue.add_after(key, FOREIGN_POD_RECHECK)
                return again.status
            return self._refused(key, observed, error)
        uid = str(created.get("uid") or "")
        deadline = time.monotonic() + EXPECTATION_SECONDS
        self.expected[key] = (taskrun["metadata"]["uid"], uid, deadline)
        metrics.observe_pod_created(taskrun["metadata"].get("creationTimestamp"))
        self.queue.add(key)
        return None

    async def _read_pod(self, key: Key) -> dict[str, Any] | None:
        try:
            return await self._call(self.api.get, pods_path(*key))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _refused(self, key: Key, observed: Observed, error: ApiException) -> dict[str, Any]:
        """The API server refused the pod: wait and retry what may pass later (a ServiceAccount
        still being made, a full quota), fail for good what the immutable template causes."""
        if transient(error):
            raise error
        message = f"the API server refused the pod: {_server_message(error)}"
        lowered = message.lower()
        if error.status == 403 and "podsecurity" not in lowered:
            if "service account" in lowered or "serviceaccount" in lowered:
                reason = "ServiceAccountNotFound"
            elif "quota" in lowered:
                reason = "QuotaExceeded"
            else:
                reason = "Forbidden"
            self.queue.retry(key)
            return self._pod_refused_status(observed, reason, message, for_good=False)
        reason = "PodInvalid" if error.status in (400, 422) else "Forbidden"
        return self._pod_refused_status(observed, reason, message, for_good=True)

    def _pod_refused_status(
        self, observed: Observed, reason: str, message: str, *, for_good: bool
    ) -> dict[str, Any]:
        """Secrets are fine, the pod is not: Pending while a retry may pass, else Failed."""
        shown, succeeded = message, st.Cond(None, "NotStarted", "the task has not run")
        if for_good:
            shown = "the run can never start as written; " + message
            succeeded = st.Cond(False, reason, shown)
        situation = st.Situation(
            "Failed" if for_good else "Pending",
            reason,
            shown,
            st.SECRETS_FOUND,
            st.Cond(False, reason, message),
            succeeded,
        )
        return st.build(observed.taskrun.get("status"), situation, _generation(observed), st.now())

    # --- writing ---------------------------------------------------------------------------

    async def _write_status(self, key: Key, observed: Observed, status: dict[str, Any]) -> None:
        previous = observed.taskrun.get("status") or {}
        if not st.same_status(previous, status):
            # A merge patch keeps fields it does not mention: name the ones that went away.
            patch = {**{k: None for k in previous if k not in status}, **status}
            try:
                await self._call(self.api.merge_patch, taskruns_path(*key) + "/status", {"status": patch})
            except ApiException as error:
                if error.status == 404:
                    return  # deleted meanwhile: nothing to tell
                raise
            self.written[key] = (str(observed.taskrun["metadata"].get("resourceVersion")), status)
        expected = self.expected.get(key)
        if expected is not None and expected[1] == status.get("podUID"):
            del self.expected[key]  # recorded: the status names the pod from now on

    def _count(self, key: Key, observed: Observed, status: Mapping[str, Any], decision: Decision) -> None:
        previous = observed.taskrun.get("status") or {}
        phase = status.get("phase")
        if phase in st.TERMINAL_PHASES and previous.get("phase") != phase:
            metrics.TASKRUNS_FINISHED.labels(
                phase=phase, reason=metrics.bounded_reason(status.get("reason"))
            ).inc()
        old_ready = st.condition_of(previous, st.SECRETS_READY) or {}
        new_ready = st.condition_of(status, st.SECRETS_READY) or {}
        if new_ready.get("status") == "False" and old_ready.get("reason") != new_ready.get("reason"):
            for problem in decision.problems:
                metrics.INJECTION_PROBLEMS.labels(reason=problem.reason.value, source="taskrun").inc()
        waits = phase == "Pending" and any(p.reason.waits for p in decision.problems)
        if waits:
            self.waiting.add(key)
        else:
            self.waiting.discard(key)

    async def _post_event(self, taskrun: Mapping[str, Any], event: Event) -> None:
        """A core/v1 Event on the TaskRun (names only, never values); best effort."""
        meta = taskrun["metadata"]
        at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
                "kind": "TaskRun",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:EVENT_MESSAGE_LIMIT],
            "source": {"component": "sesame"},
            "reportingComponent": "sesame.dev/operator",
            "reportingInstance": self.host,
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        }
        try:
            await self._call(self.api.create, events_path(meta["namespace"]), body)
        except ApiException as error:
            # A namespace being deleted refuses new events (403): nothing anyone could act on.
            level = logging.DEBUG if "NamespaceTerminating" in (error.body or "") else logging.WARNING
            where = f"{meta['namespace']}/{meta['name']}"
            logger.log(level, "event %s on TaskRun %s not posted: HTTP %s", event.reason, where, error.status)
        except Exception as error:  # an event is never worth a failed reconcile
            logger.warning("event %s on TaskRun %s/%s not posted: %s", event.reason, meta["namespace"],
                           meta["name"], type(error).__name__)  # fmt: skip

    async def _report_forged(self, key: Key, observed: Observed, decision: Decision) -> None:
        """Pods that claim this run's label without being its pod: ignored, and said so once each."""
        seen = self.reported.setdefault(key, set())
        for name in decision.forged:
            if name in seen:
                continue
            seen.add(name)
            metrics.FORGED_PODS.inc()
            logger.warning(
                "TaskRun %s/%s: ignoring pod %s, which carries its label but is not its pod", *key, name
            )
            message = (
                f"pod {name!r} carries this TaskRun's label {naming.TASKRUN_LABEL} but is not its pod "
                "(another name, owner or uid); it is ignored and never counts for this run"
            )
            await self._post_event(observed.taskrun, Event("Warning", "ForgedPodIgnored", message))

    def is_own_echo(self, key: Key, taskrun: Mapping[str, Any]) -> bool:
        """Whether a TaskRun's watch-event only brings back the status this process wrote last
        (same generation, not being deleted): it holds nothing a reconcile has not seen. Pods and
        Secrets have watch-events of their own."""
        written = self.written.get(key)
        if written is None:
            return False
        meta, status = taskrun["metadata"], taskrun.get("status") or {}
        if (
            meta.get("deletionTimestamp")
            or status.get("observedGeneration") != meta.get("generation")
            or not st.same_status(written[1], status)
        ):
            return False
        del self.written[key]  # the index holds it now
        return True

    def forget(self, key: Key) -> None:
        self.queue.drop(key)
        self.expected.pop(key, None)
        self.written.pop(key, None)
        self.reported.pop(key, None)
        self.waiting.discard(key)


def _generation(observed: Observed) -> int:
    return int(observed.taskrun["metadata"].get("generation") or 1)
