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


def controlled_by(pod: Mapping[str, Any], uid: str) -> bool:
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
    )
