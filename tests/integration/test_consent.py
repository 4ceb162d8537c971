"""A TaskRun never gives its creator more than they already have (issue 14), against the real API
server, its RBAC and its ValidatingAdmissionPolicies, with users impersonated by kubectl `--as`.

- the Secret's side: `from:` reaches only a Secret Sesame made or whose owner opted it in; a Helm
  release record or a ServiceAccount token never;
- the creator's side: only someone who may create pods in a namespace may create TaskRuns there;
- a pod that asks for secrets without the label that sends it to Sesame is refused by the API
  server itself, even with no Sesame running.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support import leaks
from tests.support.cluster import UNSCHEDULED, Cluster, eventually
from tests.support.operator import running_operator
from tests.support.status import status_of
from tests.support.tasks import proof, reporting_container, reports

pytestmark = pytest.mark.local_plane  # the webhook is reached on loopback


def test_from_reaches_only_secrets_whose_owner_consented(
    cluster: Cluster, namespace: str, canary: str, webhook: str
) -> None:
    # What the reported namespace held: an application's Secret and a Helm release record,
    # created by others and labelled by nobody for Sesame.
    cluster.create_secret(namespace, "payroll-db", {"password": f"{canary}-db"})
    release = base64.b64encode(f"{canary}-release".encode()).decode()
    cluster.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "sh.helm.release.v1.payroll.v1", "labels": {"sesame.dev/usable": "true"}},
            "type": "helm.sh/release.v1",
            "data": {"release": release},
        },
    )
    leaks.plant(f"{canary}-db")
    leaks.plant(f"{canary}-release")
    reader = reporting_container("main", ["db"])
    app = {
        "secrets": [{"key": "db", "from": {"secret": "payroll-db", "key": "password"}}],
        "template": {"spec": {"containers": [reader]}},
    }
    helm = {
        "secrets": [{"key": "r", "from": {"secret": "sh.helm.release.v1.payroll.v1", "key": "release"}}],
        "template": {"spec": {"containers": [reader], **UNSCHEDULED}},
    }
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "app", app)
        cluster.create_taskrun(namespace, "helm", helm)
        for name in ("app", "helm"):
            eventually(
                lambda name=name: status_of(cluster, namespace, name).get("reason") == "SecretNotUsable",
                what=f"{name}: SecretNotUsable",
            )
        held = status_of(cluster, namespace, "app")
        assert held["phase"] == "Pending"
        assert f"kubectl label secret -n {namespace} payroll-db sesame.dev/usable=true" in held["message"]
        assert (
            "a Helm release record (type helm.sh/release.v1), which Sesame never delivers"
            in status_of(cluster, namespace, "helm")["message"]
        )
        # The webhook answers the same way for a pod its author creates.
        pod = {
            "metadata": {
                "name": "direct",
                "labels": {"sesame.dev/inject": "true"},
                "annotations": {"sesame.dev/secrets": json.dumps(app["secrets"])},
            },
            "spec": {"containers": [reader]},
        }
        eventually(lambda: _configured(cluster, webhook), what="the webhook configuration")
        with pytest.raises(ApiException) as refused:
            cluster.core.create_namespaced_pod(namespace, pod)
        assert "sesame.dev/usable=true" in json.loads(refused.value.body)["message"]
        assert cluster.pod(namespace, "app") is None
        # The owner opts in: the run goes on by itself and the task reads the value.
        cluster.core.patch_namespaced_secret(
            "payroll-db", namespace, {"metadata": {"labels": {"sesame.dev/usable": "true"}}}
        )
        eventually(
            lambda: status_of(cluster, namespace, "app").get("phase") == "Succeeded",
            timeout=60,
            what="the run after the owner's consent",
        )
        assert reports(cluster, namespace, "app", ["main"])["main"]["values"] == {"db": proof(f"{canary}-db")}
        assert status_of(cluster, namespace, "helm")["reason"] == "SecretNotUsable"
    assert cluster.pod(namespace, "helm") is None
    assert canary not in runner.output


def _configured(cluster: Cluster, name: str) -> bool:
    try:
        config = client.AdmissionregistrationV1Api(cluster.api).read_mutating_webhook_configuration(name)
    except ApiException:
        return False
    return bool(config.webhooks)


def _kubectl_as(
    cluster: Cluster, user: str, *args: str, body: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl(), f"--as={user}", *args],
        input=json.dumps(body) if body else None,
        capture_output=True,
        text=True,
        env=cluster.env(),
        check=False,
    )


def _grant(cluster: Cluster, namespace: str, user: str, rules: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": user}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


TASKRUNS = {"apiGroups": ["sesame.dev"], "resources": ["taskruns"], "verbs": ["create", "get"]}
PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}


def test_only_someone_who_may_create_pods_may_create_a_taskrun(cluster: Cluster, namespace: str) -> None:
    """The API server checks it (a ValidatingAdmissionPolicy with CEL's authorizer), Sesame or not."""
    _grant(cluster, namespace, "alice", [TASKRUNS])  # may create TaskRuns, not pods
    _grant(cluster, namespace, "bob", [TASKRUNS, PODS])
    # The template names a ServiceAccount of the namespace: what a pod of its creator could do.
    taskrun = {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "TaskRun",
        "metadata": {"name": "run", "namespace": namespace},
        "spec": {"template": {"spec": {"serviceAccountName": "default", "containers": [{"name": "main"}]}}},
    }
    alice = _kubectl_as(cluster, "alice", "create", "-f", "-", body=taskrun)
    assert alice.returncode != 0
    assert (
        f"user alice may not create pods in namespace {namespace}, so may not create TaskRuns there"
        in alice.stderr
    )
    assert "ValidatingAdmissionPolicy" in alice.stderr
    # RBAC alone would have let her: the refusal is the policy's.
    can = _kubectl_as(cluster, "alice", "auth", "can-i", "create", "taskruns.sesame.dev", "-n", namespace)
    assert can.stdout.strip() == "yes"
    bob = _kubectl_as(cluster, "bob", "create", "-f", "-", body=taskrun)
    assert bob.returncode == 0, bob.stderr
    assert cluster.taskrun(namespace, "run")["metadata"]["name"] == "run"


def test_a_pod_that_asks_for_secrets_without_the_label_is_refused_by_the_api_server(
    cluster: Cluster, namespace: str
) -> None:
    """No operator runs here: the API server enforces it alone, so an outage of Sesame blocks no
    unrelated pod, and a pod never starts without the secrets it asked for."""
    asked = {
        "metadata": {"name": "asks", "annotations": {"sesame.dev/secrets": '[{"key": "my_secret"}]'}},
        "spec": {"containers": [{"name": "main", "image": "img"}], **UNSCHEDULED},
    }
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(namespace, asked)
    message = json.loads(refused.value.body)["message"]
    assert 'not the label sesame.dev/inject: "true"' in message
    assert "add the label" in message
    # Unrelated pods, and pods with neither, are untouched.
    plain = {"metadata": {"name": "plain"}, "spec": asked["spec"]}
    assert cluster.core.create_namespaced_pod(namespace, plain).metadata.name == "plain"
