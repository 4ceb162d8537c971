"""TaskRun status in metav1.Condition shape: pure builders, one per situation a run can be in.

Every status is whole (a merge patch replaces the conditions list as a whole), so a write never
leaves half of an older status behind. Conditions:

- `SecretsReady`  every requested Secret and data key exists and may be used, right now;
- `PodCreated`    the run's pod exists (or why it does not);
- `Succeeded`     Unknown while the task has not finished; True/False when it has (Tekton's and
                  Knative's convention: `kubectl wait --for=condition=Succeeded` for success,
                  `--for=condition=Succeeded=False` for failure);
- `Reconciling`, `Stalled`  the "abnormal-true" pair kstatus (Flux, `kubectl wait`-style tools) reads:
                  Reconciling while the run waits or runs, Stalled when it failed or can never run.

`status.reason` repeats the reason of whatever holds the run back (the `Reason` printer column).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SECRETS_READY = "SecretsReady"
POD_CREATED = "PodCreated"
SUCCEEDED = "Succeeded"
RECONCILING = "Reconciling"
STALLED = "Stalled"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
ALL_SECRETS_READY = "every requested secret exists"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Cond:
    """One condition's value: status (True / False / None = Unknown), reason, message."""

    status: bool | None
    reason: str
    message: str


SECRETS_FOUND = Cond(True, "SecretsFound", ALL_SECRETS_READY)


def condition(
    previous: Mapping[str, Any] | None, type_: str, value: Cond, generation: int, at: str
) -> dict[str, Any]:
    """A condition that keeps its lastTransitionTime while its status does not change."""
    status = "Unknown" if value.status is None else ("True" if value.status else "False")
    old = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == type_), None)
    transition = old["lastTransitionTime"] if old and old.get("status") == status else at
    return {
        "type": type_,
        "status": status,
        "reason": value.reason,
        "message": value.message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }


@dataclass(frozen=True)
class Situation:
    """Everything a status says, before it is dressed in conditions and timestamps."""

    phase: str  # Pending | Running | Succeeded | Failed
    reason: str
    message: str
    secrets_ready: Cond
    pod_created: Cond
    succeeded: Cond
    pod_name: str | None = None
    pod_uid: str | None = None
    deliveries: Sequence[Mapping[str, Any]] = ()
    start_time: str | None = None


def build(
    previous: Mapping[str, Any] | None, situation: Situation, generation: int, at: str
) -> dict[str, Any]:
    """The whole status for `situation`, keeping transition times and start/completion times."""
    phase = situation.phase
    finished = phase in TERMINAL_PHASES
    status: dict[str, Any] = {
        "phase": phase,
        "reason": situation.reason,
        "message": situation.message,
        "observedGeneration": generation,
    }
    if situation.pod_name:
        status["podName"] = situation.pod_name
    pod_uid = situation.pod_uid or (previous or {}).get("podUID")
    if situation.pod_name and pod_uid:
        status["podUID"] = pod_uid
    if situation.deliveries:
        status["secrets"] = [dict(d) for d in situation.deliveries]
    start = situation.start_time or (previous or {}).get("startTime")
    if start:
        status["startTime"] = start
    if finished:
        status["completionTime"] = (previous or {}).get("completionTime") or at
    reconciling = (
        Cond(False, situation.reason, "the run is over")
        if finished
        else Cond(True, situation.reason, situation.message)
    )
    stalled = (
        Cond(True, situation.reason, situation.message)
        if phase == "Failed"
        else Cond(False, situation.reason, "nothing holds the run back for good")
    )
    status["conditions"] = [
        condition(previous, SECRETS_READY, situation.secrets_ready, generation, at),
        condition(previous, POD_CREATED, situation.pod_created, generation, at),
        condition(previous, SUCCEEDED, situation.succeeded, generation, at),
        condition(previous, RECONCILING, reconciling, generation, at),
        condition(previous, STALLED, stalled, generation, at),
    ]
    return status


def essence(status: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What a user can see in a status, without its timestamps (hashable, for comparisons)."""
    status = status or {}
    conditions = tuple(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
        for c in status.get("conditions") or []
    )
    return (
        status.get("phase"),
        status.get("reason"),
        status.get("podName"),
        status.get("podUID"),
        status.get("observedGeneration"),
        status.get("message"),
        status.get("startTime"),
        conditions,
        tuple(tuple(sorted(s.items())) for s in status.get("secrets") or []),
    )


def same_status(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything a user can see (ignoring transition times)."""
    return bool(old) and essence(old) == essence(new)


def condition_of(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), None)
