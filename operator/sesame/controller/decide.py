"""The pure heart of the controller: (a TaskRun, its pod, the namespace's Secrets) → what to do.

`decide` reads nothing and writes nothing: given what the operator last saw, it returns the pod to
create (if any), the whole status the TaskRun should have, and the events that mark a change. The
reconcile (sesame.controller.reconcile) does the reading before and the writing after, so every
rule of a TaskRun's life is here, testable without a cluster — like `injection.inject` is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sesame.controller import status as st
from sesame.controller.pods import build_pod, is_run_pod, owner_of, pod_spec_of
from sesame.controller.status import Cond, Situation
from sesame.injection import (
    Inventory,
    Problem,
    Reason,
    check_inventory,
    deliveries,
    direct_secret_references,
    inject,
    summarize,
)
from sesame.requests import RequestError, SecretRequest, parse_requests

NOT_STARTED = Cond(None, "NotStarted", "the task has not run")
NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
# Reasons a run can never start for, found in its (immutable) spec: such a run is Failed, yet its
# message keeps naming every current problem (a Secret arriving removes one from the list).
SPEC_REASONS = frozenset({NAMESPACE_NOT_ALLOWED} | {r.value for r in Reason if not r.waits})
# How long a pod this operator created may take to appear in its watch before its absence means
# it was deleted (controller-runtime calls these "expectations").
EXPECTATION_SECONDS = 60.0


@dataclass(frozen=True)
class Policy:
    """Namespaces whose TaskRuns are refused: the system's and Sesame's own, plus configured ones."""

    refused_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile reads, as the operator last saw it (names, never values)."""

    taskrun: Mapping[str, Any]
    pod: Mapping[str, Any] | None  # the pod named after the TaskRun, whoever owns it
    labelled: Sequence[Mapping[str, Any]] = ()  # every pod labelled sesame.dev/taskrun=<name>
    secrets: Inventory = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    # The uid of the pod this operator created, until the status records it: the pod is on its way
    # through the watch (not deleted), and no other pod counts for this run meanwhile.
    created_uid: str | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any] | None  # None: leave the status alone
    pod: dict[str, Any] | None = None  # create this pod (its status follows once it is seen)
    events: list[Event] = field(default_factory=list)
    forged: list[str] = field(default_factory=list)  # pods that pretend to be this run's
    problems: list[Problem] = field(default_factory=list)


def _meta(taskrun: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = taskrun.get("metadata") or {}
    return meta


def generation_of(taskrun: Mapping[str, Any]) -> int:
    return int(_meta(taskrun).get("generation") or 1)


def _requests(taskrun: Mapping[str, Any]) -> tuple[list[SecretRequest], list[Problem]]:
    try:
        return parse_requests((taskrun.get("spec") or {}).get("secrets")), []
    except RequestError as error:
        return [], [Problem(Reason.INVALID_REQUEST, str(error))]


def _spec_problems(taskrun: Mapping[str, Any], policy: Policy) -> tuple[list[SecretRequest], list[Problem]]:
    """What is wrong with the TaskRun whatever the cluster holds: only a new TaskRun can fix it."""
    namespace = _meta(taskrun).get("namespace") or ""
    problems: list[Problem] = []
    if namespace in policy.refused_namespaces:
        problems.append(
            Problem(
                Reason.INVALID_REQUEST,
                f"TaskRuns are not served in namespace {namespace!r} (a system namespace or Sesame's own); "
                "create it in a project's namespace",
            )
        )
    requests, invalid = _requests(taskrun)
    problems += invalid
    problems += direct_secret_references(pod_spec_of(taskrun))
    return requests, problems


def _reason_of(problems: Sequence[Problem], namespace_refused: bool) -> str:
    if namespace_refused:
        return NAMESPACE_NOT_ALLOWED
    never = [p for p in problems if not p.reason.waits]
    return (never or list(problems))[0].reason.value


_KUBELET_SECRET_MISSING = re.compile(r'secret "(?P<secret>[^"]+)" not found')
_KUBELET_KEY_MISSING = re.compile(r"couldn't find key (?P<key>\S+) in Secret (?P<ns>[^/\s]+)/(?P<secret>\S+)")


def kubelet_secret_problem(pod: Mapping[str, Any], namespace: str) -> Problem | None:
    """A container the kubelet cannot start because a Secret or data key it needs is gone."""
    status = pod.get("status") or {}
    for field_name in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(field_name) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in ("CreateContainerConfigError", "CreateContainerError"):
                continue
            message = str(waiting.get("message") or "")
            missing_key = _KUBELET_KEY_MISSING.search(message)
            if missing_key:
                return Problem(
                    Reason.KEY_NOT_FOUND,
                    f"the kubelet cannot start container {container.get('name')!r}: Secret "
                    f"{missing_key['secret']!r} in namespace {namespace!r} has no data key "
                    f"{missing_key['key']!r}; put it back and the container starts",
                    missing_key["secret"],
                )
            missing = _KUBELET_SECRET_MISSING.search(message)
            if missing:
                return Problem(
                    Reason.SECRET_NOT_FOUND,
                    f"the kubelet cannot start container {container.get('name')!r}: Secret "
                    f"{missing['secret']!r} in namespace {namespace!r} is gone; create it again and the "
                    "container starts",
                    missing["secret"],
                )
    return None


def _failure(pod: Mapping[str, Any]) -> tuple[str, str]:
    """The failing container's reason and exit code, in one line."""
    status = pod.get("status") or {}
    for field_name in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(field_name) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            if code:
                reason = terminated.get("reason") or "Error"
                return reason, f"container {container.get('name')!r} exited with code {code} ({reason})"
    reason = status.get("reason") or "PodFailed"
    return reason, status.get("message") or f"the pod failed ({reason})"


def _secrets_ready(problems: Sequence[Problem]) -> Cond:
    if not problems:
        return st.SECRETS_FOUND
    return Cond(False, problems[0].reason.value, summarize(problems))


def _from_pod(
    pod: Mapping[str, Any], requests: Sequence[SecretRequest], secret_problems: list[Problem]
) -> Situation:
    """A run whose pod exists: its phase is the pod's, its SecretsReady what holds now."""
    name = pod["metadata"]["name"]
    pod_status = pod.get("status") or {}
    phase = pod_status.get("phase") or "Pending"
    if phase not in ("Pending", "Running", "Succeeded", "Failed"):
        phase = "Pending"  # Unknown: the node is not reporting; wait for it
    ready = _secrets_ready(secret_problems)
    if phase == "Succeeded":
        reason, message = "Completed", "the task completed"
        succeeded = Cond(True, reason, message)
        ready = st.SECRETS_FOUND
    elif phase == "Failed":
        reason, message = _failure(pod)
        succeeded = Cond(False, reason, message)
        ready = st.SECRETS_FOUND
    elif secret_problems:
        reason = ready.reason
        holds = (
            "the task runs, but a restart would fail: " if phase == "Running" else "the pod cannot start: "
        )
        message = holds + ready.message
        succeeded = NOT_STARTED if phase == "Pending" else Cond(None, "Running", "the task is running")
    elif phase == "Running":
        reason, message = "Running", "the task is running"
        succeeded = Cond(None, reason, message)
    else:
        reason, message = "PodPending", "the pod is waiting to start"
        succeeded = Cond(None, "NotStarted", message)
    return Situation(
        phase=phase,
        reason=reason,
        message=message,
        secrets_ready=ready,
        pod_created=Cond(True, "PodCreated", f"pod {name!r} created"),
        succeeded=succeeded,
        pod_name=name,
        pod_uid=pod["metadata"].get("uid"),
        # From the TaskRun's own requests: a pod's annotations are anyone's to write.
        deliveries=[d.to_status() for d in deliveries(requests)],
        start_time=pod_status.get("startTime"),
    )


def _held(problems: Sequence[Problem], namespace_refused: bool) -> Situation:
    """No pod, because of `problems`: a run that waits (Pending) or one that never can (Failed)."""
    reason = _reason_of(problems, namespace_refused)
    message = summarize(problems)
    never = namespace_refused or any(not p.reason.waits for p in problems)
    secrets_ready = Cond(False, reason, message)
    if never:
        cannot = Cond(False, reason, "the run can never start as written; " + message)
        return Situation(
            "Failed",
            reason,
            cannot.message,
            secrets_ready,
            Cond(False, reason, "no pod: the run can never start as written"),
            cannot,
        )
    return Situation(
        "Pending",
        reason,
        message,
        secrets_ready,
        Cond(False, "WaitingForSecrets", "no pod until every secret is ready"),
        NOT_STARTED,
    )


def _created(name: str, uid: str, requests: Sequence[SecretRequest]) -> Situation:
    """A pod this operator created and its watch has not shown yet: said as the pod will be once
    seen (Pending, as every pod starts), so seeing it changes nothing."""
    return _from_pod({"metadata": {"name": name, "uid": uid}, "status": {"phase": "Pending"}}, requests, [])


def _pod_missing(ready: Cond, why: str, message: str) -> Situation:
    return Situation("Pending", why, message, ready, Cond(False, why, message), NOT_STARTED)


def events_between(previous: Mapping[str, Any], new: Mapping[str, Any]) -> list[Event]:
    """What a person watching `kubectl get events` should hear: each change, once."""
    events = []
    if new.get("podUID") and new.get("podUID") != previous.get("podUID"):
        events.append(Event("Normal", "PodCreated", f"created pod {new.get('podName')!r}"))
    old_ready = st.condition_of(previous, st.SECRETS_READY)
    new_ready = st.condition_of(new, st.SECRETS_READY)
    if (
        new_ready
        and new_ready["status"] == "False"
        and (
            not old_ready
            or old_ready.get("status") != "False"
            or old_ready.get("reason") != new_ready["reason"]
        )
    ):
        events.append(Event("Warning", new_ready["reason"], new_ready["message"]))
    old_pod = st.condition_of(previous, st.POD_CREATED)
    new_pod = st.condition_of(new, st.POD_CREATED)
    if (
        new_pod
        and new_pod["status"] == "False"
        and new_pod["reason"] != "WaitingForSecrets"
        and (not old_pod or old_pod.get("reason") != new_pod["reason"])
        and new["phase"] != "Failed"
    ):
        events.append(Event("Warning", new_pod["reason"], new_pod["message"]))
    phase = new.get("phase")
    if phase in st.TERMINAL_PHASES and previous.get("phase") != phase:
        events.append(
            Event(
                "Normal" if phase == "Succeeded" else "Warning",
                str(new.get("reason")),
                str(new.get("message")),
            )
        )
    return events


def _forged(
    taskrun: Mapping[str, Any], labelled: Sequence[Mapping[str, Any]], created_uid: str | None
) -> list[str]:
    """Pods that carry this run's label but are not its pod (another name, owner or uid)."""
    return sorted(
        str(pod["metadata"]["name"]) for pod in labelled if not is_run_pod(pod, taskrun, created_uid)
    )


def decide(observed: Observed, at: str) -> Decision:
    """One step of a TaskRun's life, from what the operator sees now."""
    taskrun = observed.taskrun
    meta = _meta(taskrun)
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    generation = generation_of(taskrun)
    previous: Mapping[str, Any] = taskrun.get("status") or {}
    if meta.get("deletionTimestamp"):
        return Decision(status=None)
    forged = _forged(taskrun, observed.labelled, observed.created_uid)
    if (
        previous.get("phase") in st.TERMINAL_PHASES
        and previous.get("observedGeneration") == generation
        and previous.get("reason") not in SPEC_REASONS
    ):
        return Decision(status=None, forged=forged)  # a run that ended stays as it ended

    requests, spec_problems = _spec_problems(taskrun, observed.policy)
    namespace_refused = namespace in observed.policy.refused_namespaces
    pod = observed.pod
    problems: list[Problem] = []

    if pod is not None and is_run_pod(pod, taskrun, observed.created_uid):
        problems = check_inventory(requests, observed.secrets, namespace)
        kubelet = kubelet_secret_problem(pod, namespace)
        if kubelet and not any(p.secret == kubelet.secret for p in problems):
            problems.append(kubelet)
        situation = _from_pod(pod, requests, problems)
    elif pod is not None:
        owner = owner_of(pod)
        ready = _secrets_ready(check_inventory(requests, observed.secrets, namespace))
        if (
            owner
            and owner.get("kind") == "TaskRun"
            and owner.get("name") == name
            and owner.get("uid") != meta.get("uid")
        ):
            message = (
                f"pod {name!r} of an earlier TaskRun of this name is still being deleted; this run's pod "
                "is created as soon as it is gone"
            )
            situation = _pod_missing(ready, "PreviousPodTerminating", message)
        else:
            message = (
                f"a pod named {name!r} already exists in namespace {namespace!r} and is not owned by this "
                "TaskRun; delete that pod or rename the TaskRun"
            )
            situation = _pod_missing(ready, "PodNameTaken", message)
    elif observed.created_uid:  # created, not seen yet: on its way through the watch
        situation = _created(name, observed.created_uid, requests)
    elif previous.get("podName") == name:
        message = f"pod {name!r} was deleted before it finished"
        situation = Situation(
            "Failed",
            "PodDeleted",
            message,
            st.SECRETS_FOUND,
            Cond(False, "PodDeleted", message),
            Cond(False, "PodDeleted", message),
            pod_name=name,
            deliveries=previous.get("secrets") or (),
        )
    else:
        problems = list(spec_problems)
        if not namespace_refused and not any(p.reason is Reason.INVALID_REQUEST for p in spec_problems):
            result = inject(pod_spec_of(taskrun), requests, observed.secrets, namespace)
            problems += result.problems
            if not problems and result.pod_spec is not None:
                # The pod first; the status says so once the pod is seen (or known to be on its
                # way), so a burst of new runs gets its pods before anyone's status.
                new_pod = build_pod(taskrun, result.pod_spec, result.deliveries)
                return Decision(status=None, pod=new_pod, forged=forged)
        situation = _held(problems, namespace_refused)

    status = st.build(previous, situation, generation, at)
    return Decision(status=status, events=events_between(previous, status), forged=forged, problems=problems)
