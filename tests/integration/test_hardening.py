"""Hardening (issue 17), each as an adversary would try it against the real API server and node:
a forged AdmissionReview posted to the webhook by a client that is not the API server, a forged
pod that claims a TaskRun, the default log level, a TaskRun in kube-system."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from tests.integration.test_webhook import (
    create_pod,
    env_of,
    pod_body,
    wait_until_serving,
)
from tests.support import leaks
from tests.support.cluster import UNSCHEDULED, Cluster, eventually
from tests.support.operator import running_operator
from tests.support.processes import operator_process
from tests.support.tasks import python

pytestmark = pytest.mark.local_plane  # the webhook is reached on loopback


def review(namespace: str, kind: str = "Pod", requests: list[dict[str, Any]] | None = None) -> bytes:
    """An AdmissionReview as the API server would send it, written by hand."""
    pod = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": "forged",
            "namespace": namespace,
            "labels": {"sesame.dev/inject": "true"},
            "annotations": {"sesame.dev/secrets": json.dumps(requests or [{"key": "guess"}])},
        },
        "spec": {"containers": [{"name": "main", "image": "img"}]},
    }
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:admin", "groups": ["system:masters"]},
            "object": pod,
            "dryRun": False,
        },
    }
    return json.dumps(body).encode()


def post(url: str, body: bytes, ca: Path) -> dict[str, Any]:
    """POST as some pod of the cluster could: the webhook's own CA, no client certificate."""
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
        answer: dict[str, Any] = json.loads(response.read())["response"]
        return answer


def webhook_url(cluster: Cluster, name: str) -> str:
    found = client.AdmissionregistrationV1Api(cluster.api).read_mutating_webhook_configuration(name)
    return str(found.webhooks[0].client_config.url)


def test_a_forged_review_learns_nothing_and_with_client_ca_cannot_even_connect(
    cluster: Cluster,
    namespace: str,
    webhook: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    canary: str,
) -> None:
    certs = tmp_path / "certs"
    other = f"{namespace}-elsewhere"
    cluster.store_secret(namespace, "my_secret", canary)
    with running_operator([namespace]):
        wait_until_serving(cluster, namespace)
        url = webhook_url(cluster, webhook)
        # The namespace scope of the configuration, enforced by the handler too.
        answer = post(url, review(other), certs / "ca.crt")
        assert answer["allowed"] is False
        assert answer["status"]["message"] == f"Sesame does not serve namespace {other!r}"
        # Pods only.
        answer = post(url, review(namespace, kind="Deployment"), certs / "ca.crt")
        assert (answer["allowed"], answer["status"]["message"]) == (
            False,
            "Sesame's webhook completes pods only",
        )
        # At most 256 requests per pod, like spec.secrets.
        many = [{"key": f"k{i}"} for i in range(300)]
        answer = post(url, review(namespace, requests=many), certs / "ca.crt")
        assert answer["allowed"] is False
        assert "asks for 300 secrets; at most 256 are allowed per pod" in answer["status"]["message"]
    # With the API server's client CA, a client without its certificate cannot talk to it at all,
    # while the API server's own calls go through.
    pki = cluster.kubeconfig.parent / "pki"  # the local cluster's (`make cluster` or the session's)
    if not (pki / "webhook-client-ca.crt").exists():
        pytest.fail(f"needs the local cluster's webhook client CA in {pki}")
    monkeypatch.setenv("SESAME_WEBHOOK_CLIENT_CA", str(pki / "webhook-client-ca.crt"))
    with running_operator([namespace]) as runner:
        wait_until_serving(cluster, namespace)
        injected = create_pod(cluster, namespace, pod_body("real", [{"key": "my_secret"}]), dry_run=True)
        assert "SESAME_SECRET_MY_SECRET" in env_of(injected)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            post(webhook_url(cluster, webhook), review(namespace), certs / "ca.crt")
    assert canary not in runner.output


def forged_pods() -> float:
    return REGISTRY.get_sample_value("sesame_forged_pods_total") or 0.0


def controller_of(taskrun: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference the operator gives its pods, which anyone may copy."""
    return {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "TaskRun",
        "name": taskrun["metadata"]["name"],
        "uid": taskrun["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_a_forged_pod_never_speaks_for_a_taskrun(cluster: Cluster, namespace: str) -> None:
    """`evil` carries train's label and a controller ownerReference to train's uid while train waits
    for a secret; it runs and succeeds — train is not fooled, says so, and later runs its own pod."""
    spec = {
        "secrets": [{"key": "later"}],
        "template": {"spec": {"containers": [python("main", "print('real')")]}},
    }
    with running_operator([namespace]):
        before = forged_pods()
        train = cluster.create_taskrun(namespace, "train", spec)
        eventually(
            lambda: cluster.taskrun(namespace, "train").get("status", {}).get("reason") == "SecretNotFound",
            what="train waiting",
        )
        owner = controller_of(train)
        evil = {
            "metadata": {
                "name": "evil",
                "labels": {"sesame.dev/taskrun": "train"},
                "ownerReferences": [owner],
            },
            "spec": {"restartPolicy": "Never", "containers": [python("main", "print('fake')")]},
        }
        cluster.core.create_namespaced_pod(namespace, evil)
        eventually(lambda: forged_pods() > before, what="the forged pod counted")
        eventually(
            lambda: (cluster.pod(namespace, "evil") or {}).get("status", {}).get("phase") == "Succeeded",
            timeout=60,
            what="the forged pod to finish",
        )
        cluster.custom.patch_namespaced_custom_object(  # a watch-event after evil finished
            "sesame.dev", "v1alpha1", namespace, "taskruns", "train", {"metadata": {"labels": {"poke": "1"}}}
        )
        eventually(lambda: cluster.taskrun(namespace, "train")["metadata"].get("labels"), what="the poke")
        status = cluster.taskrun(namespace, "train")["status"]
        assert (status["phase"], status.get("podName")) == ("Pending", None)
        cluster.store_secret(namespace, "later", "value")
        eventually(
            lambda: cluster.taskrun(namespace, "train")["status"]["phase"] == "Succeeded",
            timeout=60,
            what="train's own run",
        )
    status = cluster.taskrun(namespace, "train")["status"]
    assert (status["podName"], status["podUID"]) == (
        "train",
        cluster.pod(namespace, "train")["metadata"]["uid"],
    )
    events = [
        (e.reason, e.message)
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.kind == "TaskRun" and e.reason == "ForgedPodIgnored"
    ]
    assert len(events) == 1
    assert "pod 'evil' carries this TaskRun's label" in events[0][1]


def test_a_tenant_cannot_make_a_pod_that_claims_a_taskrun(cluster: Cluster, namespace: str) -> None:
    """OwnerReferencesPermissionEnforcement (on in this cluster; recommended): setting
    blockOwnerDeletion on a TaskRun needs update on taskruns/finalizers, which tenants lack; a pod
    without it is never taken for the run's."""
    from tests.integration.test_consent import PODS, _grant, _kubectl_as

    _grant(cluster, namespace, "mallory", [PODS])
    train = cluster.create_taskrun(
        namespace,
        "train",
        {"secrets": [{"key": "later"}], "template": {"spec": {"containers": [python("main", "pass")]}}},
    )
    owner = controller_of(train)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train",
            "namespace": namespace,
            "labels": {"sesame.dev/taskrun": "train"},
            "ownerReferences": [owner],
        },
        "spec": {"containers": [python("main", "pass")], **UNSCHEDULED},
    }
    refused = _kubectl_as(cluster, "mallory", "create", "-f", "-", body=pod)
    assert refused.returncode != 0
    assert "cannot set blockOwnerDeletion" in refused.stderr
    owner["blockOwnerDeletion"] = False
    made = _kubectl_as(cluster, "mallory", "create", "-f", "-", body=pod)
    assert made.returncode == 0, made.stderr
    with running_operator([namespace]):
        cluster.store_secret(namespace, "later", "value")
        eventually(
            lambda: cluster.taskrun(namespace, "train").get("status", {}).get("reason") == "PodNameTaken",
            what="PodNameTaken, not adoption",
        )


def test_the_default_log_level_logs_no_debug(
    cluster: Cluster, namespace: str, tmp_path: Path, canary: str
) -> None:
    """The chart's default (`--log-level info`, JSON) must not log at DEBUG."""
    cluster.store_secret(namespace, "my_secret", canary)
    args = ["--standalone", "--log-level", "info", "--log-format", "json"]
    # The last --log-level wins: the helper's own `--log-level debug` comes first.
    with operator_process(cluster, [namespace], tmp_path / "operator.log", args=args) as operator:
        cluster.create_taskrun(
            namespace,
            "logged",
            {
                "secrets": [{"key": "my_secret"}],
                "template": {"spec": {"containers": [python("main", "pass")], **UNSCHEDULED}},
            },
        )
        eventually(lambda: cluster.pod(namespace, "logged"), what="the operator at work")
    lines = [line for line in operator.output().splitlines() if line.startswith("{")]
    levels = {json.loads(line).get("levelname") or json.loads(line).get("level") for line in lines}
    assert lines, operator.output()[-2000:]
    assert "DEBUG" not in {str(level).upper() for level in levels}
    assert not re.search(r"\[DEBUG\s*\]", operator.output())
    leaks.record("default-level operator", operator.output())


def test_taskruns_in_system_namespaces_are_refused(cluster: Cluster) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    try:
        with running_operator(["kube-system"]):
            cluster.create_taskrun(
                "kube-system",
                name,
                {"secrets": [], "template": {"spec": {"containers": [python("main", "pass")]}}},
            )
            status = eventually(
                lambda: (
                    (s := cluster.taskrun("kube-system", name).get("status") or {}).get("phase") == "Failed"
                    and s
                ),
                what="refused in kube-system",
            )
        assert status["reason"] == "NamespaceNotAllowed"
        assert "TaskRuns are not served in namespace 'kube-system'" in status["message"]
        assert cluster.pod("kube-system", name) is None
    finally:
        with contextlib.suppress(ApiException):
            cluster.custom.delete_namespaced_custom_object(
                "sesame.dev", "v1alpha1", "kube-system", "taskruns", name
            )
