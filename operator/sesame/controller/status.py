"""TaskRun status in metav1.Condition shape, computed purely from what the controller knows.

Both the TaskRun reconciler and the pod mirror write whole statuses built here, so neither can
erase what the other said (a merge patch replaces the conditions list as a whole).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from sesame.injection import Delivery

SECRETS_READY = "SecretsReady"
POD_CREATED = "PodCreated"
SUCCEEDED = "Succeeded"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: Mapping[str, Any] | None,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
) -> dict[str, Any]:
    """A condition that keeps its lastTransitionTime while its status does not change."""
    value = "Unknown" if status is None else ("True" if status else "False")
    old = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == type_), None)
    transition = old["lastTransitionTime"] if old and old.get("status") == value else now()
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }


WAITING_FOR_SECRETS = "no pod until every secret is ready"


def _pending(
    previous: Mapping[str, Any] | None,
    message: str,
    generation: int,
    secrets_ready: dict[str, Any],
    pod_created: dict[str, Any],
) -> dict[str, Any]:
    """No pod (yet), so the task has not run: only why differs."""
    not_started = condition(previous, SUCCEEDED, None, "NotStarted", "the task has not run", generation)
    return {
        "phase": "Pending",
        "observedGeneration": generation,
        "message": message,
        "conditions": [secrets_ready, pod_created, not_started],
    }


def waiting_status(
    previous: Mapping[str, Any] | None, reason: str, message: str, generation: int
) -> dict[str, Any]:
    """No pod: a request cannot be met (yet)."""
    return _pending(
        previous,
        message,
        generation,
        condition(previous, SECRETS_READY, False, reason, message, generation),
        condition(previous, POD_CREATED, False, "WaitingForSecrets", WAITING_FOR_SECRETS, generation),
    )


def pod_failed_status(
    previous: Mapping[str, Any] | None, reason: str, message: str, generation: int
) -> dict[str, Any]:
    """Secrets are ready but the pod could not be created (invalid template, name taken, ...)."""
    return _pending(
        previous,
        message,
        generation,
        condition(previous, SECRETS_READY, True, "SecretsFound", "every requested secret exists", generation),
        condition(previous, POD_CREATED, False, reason, message, generation),
    )


def _failure(pod: Mapping[str, Any]) -> tuple[str, str]:
    """The failing container's reason and exit code, in one line."""
    status = pod.get("status") or {}
    for field in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(field) or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            code = terminated.get("exitCode")
            if code:
                reason = terminated.get("reason") or "Error"
                return reason, f"container {container.get('name')!r} exited with code {code} ({reason})"
    reason = status.get("reason") or "PodFailed"
    return reason, status.get("message") or f"the pod failed ({reason})"


def status_from_pod(
    previous: Mapping[str, Any] | None,
    pod: Mapping[str, Any] | None,
    pod_name: str,
    deliveries: Sequence[Mapping[str, Any]],
    generation: int,
) -> dict[str, Any]:
    """The status of a TaskRun whose pod exists (or existed: `pod` None means it was deleted)."""
    pod_status = (pod or {}).get("status") or {}
    phase = pod_status.get("phase") or "Pending"
    previous_phase = (previous or {}).get("phase")
    if pod is None:
        phase = previous_phase if previous_phase in TERMINAL_PHASES else "Failed"
    if phase not in {"Pending", "Running", "Succeeded", "Failed"}:
        phase = "Pending"
    status: dict[str, Any] = {
        "phase": phase,
        "podName": pod_name,
        "observedGeneration": generation,
        "secrets": list(deliveries),
    }
    start = pod_status.get("startTime") or (previous or {}).get("startTime")
    if start:
        status["startTime"] = start
    if phase == "Succeeded":
        succeeded = condition(previous, SUCCEEDED, True, "Completed", "the task completed", generation)
        message = "the task completed"
    elif phase == "Failed" and pod is None and previous_phase not in TERMINAL_PHASES:
        message = f"pod {pod_name!r} was deleted before it finished"
        succeeded = condition(previous, SUCCEEDED, False, "PodDeleted", message, generation)
    elif phase == "Failed":
        reason, message = _failure(pod or {})
        succeeded = condition(previous, SUCCEEDED, False, reason, message, generation)
    elif phase == "Running":
        message = "the task is running"
        succeeded = condition(previous, SUCCEEDED, None, "Running", message, generation)
    else:
        message = "the pod is waiting to start"
        succeeded = condition(previous, SUCCEEDED, None, "NotStarted", message, generation)
    status["message"] = message
    if phase in TERMINAL_PHASES:
        status["completionTime"] = (previous or {}).get("completionTime") or now()
    status["conditions"] = [
        condition(previous, SECRETS_READY, True, "SecretsFound", "every requested secret exists", generation),
        condition(previous, POD_CREATED, True, "PodCreated", f"pod {pod_name!r} created", generation),
        succeeded,
    ]
    return status


def essence(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a user can see in a status, without its timestamps (hashable, for comparisons)."""
    conditions = tuple(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
        for c in status.get("conditions") or []
    )
    return (
        status.get("phase"),
        status.get("podName"),
        status.get("observedGeneration"),
        status.get("message"),
        conditions,
        tuple(tuple(sorted(s.items())) for s in status.get("secrets") or []),
    )


def same_status(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything a user can see (ignoring timestamps)."""
    if not old:
        return False
    return essence(old) == essence(new)


def deliveries_to_status(deliveries: Sequence[Delivery]) -> list[dict[str, str]]:
    return [d.to_status() for d in deliveries]
