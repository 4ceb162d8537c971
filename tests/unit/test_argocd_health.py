"""The Argo CD health script for TaskRuns, run under Lua 5.1 (Argo CD's gopher-lua dialect) on the
statuses the operator really writes (sesame.controller.status builds them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa.lua51 import LuaRuntime

from sesame.controller import status as st

SCRIPT = (Path(__file__).resolve().parents[2] / "gitops" / "argocd" / "taskrun-health.lua").read_text()


def health(status: dict[str, Any] | None) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    obj: dict[str, Any] = {"apiVersion": "sesame.dev/v1alpha1", "kind": "TaskRun"}
    if status is not None:
        obj["status"] = status
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "train"}, "status": {"phase": phase, **status}}


def from_pod(pod_: dict[str, Any] | None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    return st.status_from_pod(previous, pod_, "train", [], 1)


FAILED_CONTAINER = {"containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 3}}}]}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "Progressing"),  # not seen by the operator yet
        (st.waiting_status(None, "SecretNotFound", "secret 'k' not found", 1), "Progressing"),
        (st.waiting_status(None, "KeyNotFound", "no data key 'k'", 1), "Progressing"),
        (st.waiting_status(None, "EnvVarClash", "two requests want X", 1), "Degraded"),
        (st.waiting_status(None, "DirectSecretReference", "the template references", 1), "Degraded"),
        (st.waiting_status(None, "InvalidRequest", "bad", 1), "Degraded"),
        (st.pod_failed_status(None, "PodNameTaken", "pod 'train' exists", 1), "Degraded"),
        (from_pod(pod("Pending")), "Progressing"),
        (from_pod(pod("Running")), "Progressing"),
        (from_pod(pod("Succeeded")), "Healthy"),
        (from_pod(pod("Failed", **FAILED_CONTAINER)), "Degraded"),
        (from_pod(None, previous=from_pod(pod("Running"))), "Degraded"),  # PodDeleted
    ],
)
def test_health_follows_the_status(status: dict[str, Any] | None, expected: str) -> None:
    got, message = health(status)
    assert got == expected
    if status is not None:
        assert message == status["message"]  # the operator's own one-line explanation
