"""What the benchmark creates: Secrets, TaskRuns, the floor's pre-injected pods, webhook pods.

Every TaskRun asks for the same requests of 3 Secrets: three env vars (`secretKeyRef`) and one
file (a projected volume). The floor pod is built by `sesame.injection.inject` from the same
template and requests, so it is byte-for-byte the pod spec Sesame would create.

The bench measures the operator, not the kubelet: its pods name a scheduler nobody runs, so the
local node never starts them (except in the `node` part, which measures exactly that).
"""

from __future__ import annotations

import json
from typing import Any

from sesame import naming
from sesame.injection import SecretFacts, inject
from sesame.requests import parse_requests

TASK_IMAGE = "ghcr.io/sesame-dev/sesame-task:0.1.0"  # on the local node (tools/images.py)
CONTAINER = {"name": "main", "image": TASK_IMAGE, "command": ["python3", "-c", "print('hi')"]}
UNSCHEDULED = "sesame-bench-no-scheduler"
TEMPLATE_SPEC: dict[str, Any] = {
    "containers": [CONTAINER],
    "restartPolicy": "Never",
    "schedulerName": UNSCHEDULED,
}
SECRET_KEYS = ("bench_token", "bench_api_key", "db-creds")


def secret_requests(keys: tuple[str, str, str] = SECRET_KEYS) -> list[dict[str, Any]]:
    """3 Secrets, 4 requests: 3 secretKeyRefs (default name, custom envVar, `from`) + 1 file."""
    token, api_key, creds = keys
    return [
        {"key": token},
        {"key": api_key, "envVar": "API_KEY"},
        {"key": "db_password", "from": {"secret": creds, "key": "password"}},
        {"key": "db_ca", "mountRequirement": "FILE", "from": {"secret": creds, "key": "ca.crt"}},
    ]


def secrets(keys: tuple[str, str, str] = SECRET_KEYS) -> list[dict[str, Any]]:
    """The Secret objects the requests need, as `sesame create secret` (and GitOps) would store them."""
    token, api_key, creds = keys
    managed = {naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE}
    return [
        {
            "metadata": {
                "name": naming.secret_object_name(key),
                "labels": managed,
                "annotations": {naming.KEY_ANNOTATION: key},
            },
            "stringData": {key: "not-a-real-value"},
        }
        for key in (token, api_key)
    ] + [
        {
            "metadata": {"name": creds, "labels": {naming.USABLE_LABEL: naming.USABLE_VALUE}},  # opted in
            "stringData": {"password": "not-a-real-value", "ca.crt": "-----"},
        }
    ]


def inventory(keys: tuple[str, str, str] = SECRET_KEYS) -> dict[str, SecretFacts]:
    """The operator's view of `secrets(keys)`: names, data keys and consent."""
    return {s["metadata"]["name"]: SecretFacts.of(s | {"data": s["stringData"]}) for s in secrets(keys)}


def taskrun(name: str, keys: tuple[str, str, str] = SECRET_KEYS, run: bool = False) -> dict[str, Any]:
    """A TaskRun whose pod never runs, or (`run`) one the node runs: a trivial task."""
    spec = {"containers": [CONTAINER]} if run else {"containers": [CONTAINER], "schedulerName": UNSCHEDULED}
    return {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name},
        "spec": {"secrets": secret_requests(keys), "template": {"spec": spec}},
    }


def injected_pod_spec(namespace: str) -> dict[str, Any]:
    """The pod spec Sesame builds for `taskrun(...)`: the floor creates exactly this."""
    result = inject(TEMPLATE_SPEC, parse_requests(secret_requests()), inventory(), namespace)
    if result.pod_spec is None:
        raise RuntimeError(f"the benchmark's own requests do not inject: {result.problems}")
    return result.pod_spec


def floor_pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def webhook_pod(name: str) -> dict[str, Any]:
    """A plain pod that asks the admission webhook for the same secrets (DESIGN §4)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {naming.INJECT_LABEL: "true"},
            "annotations": {naming.SECRETS_ANNOTATION: json.dumps(secret_requests())},
        },
        "spec": dict(TEMPLATE_SPEC),
    }
