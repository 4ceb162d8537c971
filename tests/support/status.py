"""A TaskRun's status as tests read it: the object, one condition, and waits on either."""

from __future__ import annotations

from typing import Any

from tests.support.cluster import Cluster, eventually


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.taskrun(namespace, name).get("status") or {}
    return status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def reaching(
    cluster: Cluster, namespace: str, name: str, field: str, value: str, timeout: float = 30
) -> dict[str, Any]:
    """Wait for `status.<field> == value`; the status then."""
    return eventually(
        lambda: (s := status_of(cluster, namespace, name)).get(field) == value and s,
        timeout=timeout,
        what=f"TaskRun {name}: status.{field} == {value!r}",
    )


def finished(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    """Wait for the run to end (Succeeded or Failed); the status then."""
    return eventually(
        lambda: (s := status_of(cluster, namespace, name)).get("phase") in ("Succeeded", "Failed") and s,
        timeout=timeout,
        what=f"TaskRun {name} to finish",
    )
