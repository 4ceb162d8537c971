"""The operator keeps names and data keys in memory, never a Secret's value (issue 17): after the
index, the controller and the webhook's live reads have all handled a Secret, nothing Sesame
keeps — its modules, the controller with the watch indexes it reads, the webhook's runtime — holds
the value or its base64 form, however deep.

The operator runs in this process (kopf.testing.KopfRunner), so the test can walk every object
Sesame holds. A value does pass through memory while an event or a read is handled, and Kopf's
watch loop keeps the last event of each watch until the next event or bookmark (Kopf internals,
outside Sesame; see the README). The value is kept only in bytearrays here, which the walk skips.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gc
import json
import secrets
import sys
import threading
import types
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.test_webhook import (
    create_pod,
    pod_body,
    wait_until_serving,
)
from tests.support.cluster import UNSCHEDULED, Cluster, eventually
from tests.support.operator import running_operator

pytestmark = pytest.mark.local_plane


# What the walk does not enter: code, and the machinery Sesame's objects merely point at (the
# event loop and its tasks, thread pools, Kopf's watchers), which lead to every live object.
NOT_DATA = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
    asyncio.AbstractEventLoop,
    asyncio.Future,
    asyncio.Handle,
    concurrent.futures.Executor,
    threading.Thread,
)


def sesame_roots() -> list[Any]:
    """Everything Sesame itself keeps: its modules' globals, the controller (with the watch
    indexes it reads) and the webhook's runtime, as found among the live objects."""
    from sesame.controller.reconcile import Controller
    from sesame.webhook.handler import WebhookRuntime

    roots: list[Any] = [
        vars(module) for name, module in sys.modules.items() if name.split(".")[0] == "sesame"
    ]
    roots += [obj for obj in gc.get_objects() if isinstance(obj, (Controller, WebhookRuntime))]
    return roots


def holders(needles: list[bytearray]) -> list[str]:
    """Every str/bytes object reachable from what Sesame keeps that contains one of the needles."""
    gc.collect()
    forms = [bytes(n) for n in needles]  # short-lived: only inside this frame
    found: list[str] = []
    roots = sesame_roots()
    assert any(not isinstance(root, dict) for root in roots), "no controller found: is the operator running?"
    seen: set[int] = {id(forms), id(roots)}
    stack: list[Any] = list(roots)
    while stack:
        obj = stack.pop()
        for ref in gc.get_referents(obj):
            if id(ref) in seen or isinstance(ref, NOT_DATA):
                continue
            seen.add(id(ref))
            if isinstance(ref, (str, bytes)):
                data = ref.encode("utf-8", "surrogatepass") if isinstance(ref, str) else ref
                if any(form in data for form in forms):
                    found.append(f"{type(obj).__name__} holds {type(ref).__name__} of {len(ref)}")
            elif not isinstance(ref, (int, float, bytearray, type(None))):
                stack.append(ref)
    del forms
    return found


def test_no_secret_value_stays_in_the_operators_memory(
    cluster: Cluster, namespace: str, webhook: str
) -> None:
    value = bytearray(f"memory-canary-{secrets.token_hex(12)}".encode())
    encoded = bytearray(base64.b64encode(bytes(value)))
    needles = [value, encoded]
    body: dict[str, Any] = {
        "metadata": {
            "name": "held",
            "labels": {"app.kubernetes.io/managed-by": "sesame"},
            "annotations": {"sesame.dev/key": "held"},
        },
        "data": {"held": encoded.decode()},
    }
    # Not opted in: every admission that asks for it reads it live (the webhook's other path).
    theirs: dict[str, Any] = {"metadata": {"name": "theirs"}, "data": {"password": encoded.decode()}}
    cluster.core.create_namespaced_secret(namespace, body)
    cluster.core.create_namespaced_secret(namespace, theirs)
    del body, theirs
    with running_operator([namespace]):
        wait_until_serving(cluster, namespace)
        spec = {
            "secrets": [{"key": "held"}],
            "template": {"spec": {"containers": [{"name": "main", "image": "img"}], **UNSCHEDULED}},
        }
        cluster.create_taskrun(namespace, "uses", spec)
        eventually(lambda: cluster.pod(namespace, "uses"), what="the TaskRun's pod")
        for index in range(3):
            with pytest.raises(ApiException, match=r"sesame\.dev/usable=true"):
                create_pod(
                    cluster,
                    namespace,
                    pod_body(
                        f"live-{index}", [{"key": "p", "from": {"secret": "theirs", "key": "password"}}]
                    ),
                )
        injected = create_pod(cluster, namespace, pod_body("ok", [{"key": "held"}]), dry_run=True)
        assert "sesame.dev/injected" in json.dumps(injected)
        del injected
        left = holders(needles)
    assert left == [], left
