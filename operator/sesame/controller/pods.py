"""The pod a TaskRun owns: pure construction from the TaskRun and the injected pod spec."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from sesame import naming
from sesame.injection import Delivery, injected_annotation


def pod_spec_of(taskrun: Mapping[str, Any]) -> dict[str, Any]:
    """The template's pod spec, with `restartPolicy: Never` unless the template says otherwise."""
    spec = copy.deepcopy(dict(((taskrun.get("spec") or {}).get("template") or {}).get("spec") or {}))
    spec.setdefault("restartPolicy", "Never")
    return spec


def owner_reference(taskrun: Mapping[str, Any]) -> dict[str, Any]:
    meta = taskrun["metadata"]
    return {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_pod(
    taskrun: Mapping[str, Any], pod_spec: Mapping[str, Any], deliveries: Sequence[Delivery]
) -> dict[str, Any]:
    """One pod per TaskRun, named after it (so a second create is impossible), owned by it."""
    meta = taskrun["metadata"]
    template_meta = ((taskrun.get("spec") or {}).get("template") or {}).get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), naming.TASKRUN_LABEL: meta["name"]}
    annotations = {
        **(template_meta.get("annotations") or {}),
        naming.INJECTED_ANNOTATION: injected_annotation(deliveries),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(taskrun)],
        },
        "spec": dict(pod_spec),
    }


def owner_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's controller ownerReference, if it has one."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


def controlled_by(pod: Mapping[str, Any], uid: str) -> bool:
    owner = owner_of(pod)
    return owner is not None and owner.get("uid") == uid


def is_run_pod(pod: Mapping[str, Any], taskrun: Mapping[str, Any], created_uid: str | None = None) -> bool:
    """Whether `pod` is this TaskRun's one pod: named after it, controlled by it with
    `blockOwnerDeletion` (which, with the OwnerReferencesPermissionEnforcement admission plugin, only
    those who may update the TaskRun's finalizers can set — the operator, not a tenant), and the very
    pod the status recorded (or the operator created, until the status records it)."""
    meta, pod_meta = taskrun["metadata"], pod.get("metadata") or {}
    owner = owner_of(pod) or {}
    recorded = (taskrun.get("status") or {}).get("podUID") or created_uid
    return (
        pod_meta.get("name") == meta["name"]
        and owner.get("kind") == "TaskRun"
        and owner.get("uid") == meta["uid"]
        and owner.get("blockOwnerDeletion") is True
        and (not recorded or recorded == pod_meta.get("uid"))
    )
