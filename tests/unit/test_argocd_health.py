"""The Argo CD health script for TaskRuns, run under Lua 5.1 (Argo CD's gopher-lua dialect) on the
statuses the operator really writes (sesame.controller.decide computes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa.lua51 import LuaRuntime

from sesame.controller.decide import Observed, decide
from sesame.injection import SecretFacts

SCRIPT = (Path(__file__).resolve().parents[2] / "gitops" / "argocd" / "taskrun-health.lua").read_text()


def health(status: dict[str, Any] | None) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    obj: dict[str, Any] = {"apiVersion": "sesame.dev/v1alpha1", "kind": "TaskRun"}
    if status is not None:
        obj["status"] = status
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


AT = "2026-01-01T00:00:00Z"
FACTS = {"k": SecretFacts(frozenset({"k"}), sesame_key="k")}


def status_for(
    secrets: list[dict[str, Any]],
    facts: dict[str, SecretFacts],
    pod: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    **template: Any,
) -> dict[str, Any]:
    """The status the operator's own decision writes for this situation."""
    taskrun = {
        "metadata": {"name": "train", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"secrets": secrets, "template": {"spec": {"containers": [{"name": "main", **template}]}}},
        "status": previous or {},
    }
    status = decide(Observed(taskrun, pod, [pod] if pod else [], facts), AT).status
    assert status is not None
    return status


def pod(phase: str, **status: Any) -> dict[str, Any]:
    owner = {"kind": "TaskRun", "name": "train", "uid": "u", "controller": True, "blockOwnerDeletion": True}
    return {
        "metadata": {"name": "train", "uid": "p", "ownerReferences": [owner]},
        "status": {"phase": phase, **status},
    }


FAILED_CONTAINER = {"containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": 3}}}]}
K = [{"key": "k"}]
RUNNING = status_for(K, FACTS, pod("Running"))
FOREIGN = pod("Pending")
FOREIGN["metadata"]["ownerReferences"] = []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "Progressing"),  # not seen by the operator yet
        ({"observedGeneration": 0}, "Progressing"),  # the CRD's default status, before the operator
        (status_for(K, {}), "Progressing"),  # SecretNotFound: External Secrets may still sync it
        (status_for(K, {"k": SecretFacts(frozenset())}), "Progressing"),  # KeyNotFound
        (status_for(K, {"k": SecretFacts(frozenset({"k"}), managed=False)}), "Progressing"),  # not opted in
        (status_for([{"key": "k", "envVar": "X"}, {"key": "j", "envVar": "X"}], FACTS), "Degraded"),  # clash
        (
            status_for(
                K, FACTS, env=[{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
            ),
            "Degraded",
        ),  # DirectSecretReference
        (status_for([{"key": "k", "envVar": "PATH"}], FACTS), "Degraded"),  # InvalidRequest
        (status_for(K, FACTS, FOREIGN), "Degraded"),  # PodNameTaken: someone must delete that pod
        (status_for(K, FACTS, pod("Pending")), "Progressing"),
        (RUNNING, "Progressing"),
        (status_for(K, FACTS, pod("Succeeded")), "Healthy"),
        (status_for(K, FACTS, pod("Failed", **FAILED_CONTAINER)), "Degraded"),
        (status_for(K, FACTS, None, previous=RUNNING), "Degraded"),  # PodDeleted
    ],
)
def test_health_follows_the_status(status: dict[str, Any] | None, expected: str) -> None:
    got, message = health(status)
    assert got == expected
    # The operator's own one-line explanation, once it has written one.
    assert message == (status or {}).get("message", "waiting for the Sesame operator")
