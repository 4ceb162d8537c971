"""Isolation: nothing in a TaskRun or a pod annotation in namespace A reaches a Secret of namespace B.

Extends tests/integration/test_operator_core.py::test_no_spelling_reaches_another_namespace (plain
key, `from`, `name.ns`, `ns/name`, `../ns/name`, trailing dot, `ns:name`, a template secretKeyRef)
with every other spelling we could think of, the webhook path, templates that reach Secrets
through volume plugins, and one operator that serves both namespaces — so B's Secrets are in its
memory while it handles A's requests.

Policy (DESIGN §2, §3, §4): the operator creates TaskRun pods with its own rights, so a TaskRun
template may not reference Secrets itself (reason DirectSecretReference). A webhook pod is created
by its user with the user's own rights: its own references are left alone — and Kubernetes itself
resolves every reference in a pod spec in the pod's own namespace.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from sesame import naming
from sesame.webhook.configuration import delete_configuration
from tests.support import leaks
from tests.support.bulk import pods_of, taskruns_of
from tests.support.cluster import UNSCHEDULED, Cluster, eventually
from tests.support.operator import running_operator

MAIN = {"name": "main", "image": "busybox"}
TEMPLATE: dict[str, Any] = {"spec": {"containers": [MAIN], **UNSCHEDULED}}  # pods here need only exist
MANAGED = {"labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE}}
HELD = {"SecretNotFound", "KeyNotFound", "SecretNotUsable", "DirectSecretReference", "InvalidRequest"}
# How the API server words a refusal by Sesame's webhook (a webhook that is down or failing reads
# `failed calling webhook "…"`, with status 500: that is no denial).
DENIED = 'admission webhook "inject.sesame.dev" denied the request: '


def report(what: str, **figures: Any) -> None:
    print(f"\n[isolation] {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def other(cluster: Cluster, namespace: str, canary: str) -> Iterator[str]:
    """Namespace B, holding the Secrets A must never reach (values: the canary)."""
    name = f"{namespace}-b"
    cluster.create_namespace(name)
    cluster.create_secret(name, "their-secret", {"their_secret": canary}, **MANAGED)
    cluster.create_secret(name, "their-creds", {"password": canary})
    cluster.create_secret(name, "shared", {"password": canary})  # A has "shared" too, without it
    cluster.create_secret(name, "their.dotted", {"their.dotted": canary})
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


def spellings(other: str) -> dict[str, list[dict[str, Any]]]:
    """Requests, as a TaskRun or an annotation would hold them, that name B's Secrets somehow."""
    keys = [
        "their_secret",  # exists only in B
        "THEIR_SECRET",  # the same object name, upper-case
        "Their-Secret",
        "their.dotted",  # a dotted key that exists in B
        f"their-secret.{other}",  # name.ns
        f"{other}.their-secret",  # ns.name
        f"their-secret.{other}.svc",
        f"their_secret.{other}.svc.cluster.local",
        f"{other}/their-secret",  # ns/name
        f"{other}%2Ftheir-secret",  # url-encoded slash
        f"..%2F{other}%2Ftheir-secret",
        f"../{other}/their-secret",
        "..",
        "./their-secret",
        "their-secret/",
        "their-secret ",
        "their\u2010secret",  # a Unicode hyphen that looks like '-'
        "their-secret\n",
    ]
    froms = [
        ("their-creds", "password"),
        ("shared", "password"),  # A's "shared" has no "password"; B's has
        (f"their-creds.{other}", "password"),
        (f"{other}.their-creds", "password"),
        (f"{other}/their-creds", "password"),
        (f"{other}%2Ftheir-creds", "password"),
        ("THEIR-CREDS", "password"),
        (f"../{other}/their-creds", "password"),
        ("their-creds", f"{other}/password"),
        ("their-creds", "../password"),
    ]
    cases = {f"key-{i:02d}": [{"key": key}] for i, key in enumerate(keys)}
    cases |= {f"file-{i:02d}": [{"key": key, "mountRequirement": "FILE"}] for i, key in enumerate(keys[:6])}
    cases |= {
        f"from-{i:02d}": [{"key": "p", "from": {"secret": secret, "key": key}}]
        for i, (secret, key) in enumerate(froms)
    }
    return cases


def direct_templates(other: str) -> dict[str, dict[str, Any]]:
    """Pod templates that reach a Secret by themselves (each must be refused: DirectSecretReference)."""
    ref = {"name": "their-creds", "key": "password"}
    volume_plugins = {
        "secret": {"secretName": "their-creds"},
        "projected": {"sources": [{"secret": {"name": "their-creds"}}]},
        "csi": {"driver": "secrets-store.csi.k8s.io", "nodePublishSecretRef": {"name": "their-creds"}},
        "azureFile": {"secretName": "their-creds", "shareName": "share"},
        "cephfs": {"monitors": ["10.0.0.1:6789"], "secretRef": {"name": "their-creds"}},
        "rbd": {"monitors": ["10.0.0.1:6789"], "image": "i", "secretRef": {"name": "their-creds"}},
        "iscsi": {
            "targetPortal": "10.0.0.1:3260",
            "iqn": "iqn.2001-04.com.example:storage",
            "lun": 0,
            "chapAuthSession": True,
            "secretRef": {"name": "their-creds"},
        },
        "flexVolume": {"driver": "example/driver", "secretRef": {"name": "their-creds"}},
        "cinder": {"volumeID": "v", "secretRef": {"name": "their-creds"}},
    }
    templates: dict[str, dict[str, Any]] = {
        "direct-env": {"containers": [{**MAIN, "env": [{"name": "X", "valueFrom": {"secretKeyRef": ref}}]}]},
        "direct-init-env": {
            "initContainers": [
                {**MAIN, "name": "setup", "env": [{"name": "X", "valueFrom": {"secretKeyRef": ref}}]}
            ],
            "containers": [MAIN],
        },
        "direct-envfrom": {"containers": [{**MAIN, "envFrom": [{"secretRef": {"name": "their-creds"}}]}]},
        "direct-init-envfrom": {
            "initContainers": [
                {**MAIN, "name": "setup", "envFrom": [{"secretRef": {"name": "their-creds"}}]}
            ],
            "containers": [MAIN],
        },
    }
    for plugin, config in volume_plugins.items():
        templates[f"direct-{plugin.lower()}"] = {
            "containers": [{**MAIN, "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
            "volumes": [{"name": "v", plugin: config}],
        }
    return templates


def cross_namespace_refs(
    pods: list[dict[str, Any]], inventories: dict[str, dict[str, set[str]]]
) -> list[Any]:
    """Secret references in pods that the pod's own namespace cannot satisfy."""
    bad = []
    for pod in pods:
        namespace, spec = pod["metadata"]["namespace"], pod["spec"]
        own = inventories.get(namespace, {})
        refs = []
        for field in ("initContainers", "containers"):
            for container in spec.get(field) or []:
                for env in container.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        refs.append((ref["name"], ref.get("key")))
                refs += [
                    (s["secretRef"]["name"], None) for s in container.get("envFrom") or [] if "secretRef" in s
                ]
        for volume in spec.get("volumes") or []:
            for source in (volume.get("projected") or {}).get("sources") or []:
                if "secret" in source:
                    refs += [
                        (source["secret"]["name"], i["key"]) for i in source["secret"].get("items") or []
                    ]
        bad += [
            (namespace, pod["metadata"]["name"], ref)
            for ref in refs
            if ref[0] not in own or (ref[1] is not None and ref[1] not in own[ref[0]])
        ]
    return bad


def test_no_taskrun_in_a_reaches_b(cluster: Cluster, namespace: str, other: str, canary: str) -> None:
    cluster.create_secret(namespace, "shared", {"user": "mine"})
    cluster.create_secret(namespace, "mine", {"mine": "mine"}, **MANAGED)
    cases = spellings(other)
    templates = direct_templates(other)
    rejected: dict[str, str] = {}
    created: list[str] = []
    with running_operator([namespace, other]) as runner:
        for name, secrets in cases.items():
            try:
                cluster.create_taskrun(namespace, name, {"secrets": secrets, "template": TEMPLATE})
                created.append(name)
            except ApiException as error:  # the CRD's schema refuses it: nothing else may
                rejected[name] = f"{error.status} {json.loads(error.body or '{}').get('message', '')}"
        for name, spec in templates.items():
            cluster.create_taskrun(
                namespace, name, {"secrets": [], "template": {"spec": {**spec, **UNSCHEDULED}}}
            )
            created.append(name)
        # A template that names B as its namespace: the pod is still A's (and gets A's secret).
        cluster.create_taskrun(
            namespace,
            "template-namespace",
            {"secrets": [{"key": "mine"}], "template": {"metadata": {"namespace": other}, **TEMPLATE}},
        )
        # A TaskRun whose body says B, sent to A's URL: the API server refuses it.
        body = {
            "apiVersion": "sesame.dev/v1alpha1",
            "kind": "TaskRun",
            "metadata": {"name": "body-says-b", "namespace": other},
            "spec": {"secrets": [{"key": "their_secret"}], "template": TEMPLATE},
        }
        with pytest.raises(ApiException) as mismatch:
            cluster.custom.create_namespaced_custom_object(
                "sesame.dev", "v1alpha1", namespace, "taskruns", body
            )
        assert mismatch.value.status == 400, mismatch.value.body
        said_b = json.loads(mismatch.value.body or "{}").get("message", "")

        def decided() -> list[dict[str, Any]] | None:
            runs = [
                t for t in taskruns_of(cluster.api, namespace) if (t.get("status") or {}).get("conditions")
            ]
            return runs if len(runs) == len(created) + 1 else None

        runs = eventually(decided, timeout=60, interval=0.5, what="every TaskRun in A decided")
    reasons = {
        t["metadata"]["name"]: next(
            c["reason"] for c in t["status"]["conditions"] if c["type"] == "SecretsReady"
        )
        for t in runs
    }
    pods_a, pods_b = pods_of(cluster.api, namespace), pods_of(cluster.api, other)
    inventories = {
        namespace: {"shared": {"user"}, "mine": {"mine"}},
        other: {"their-secret": {"their_secret"}, "their-creds": {"password"}, "shared": {"password"}},
    }
    crossing = cross_namespace_refs(pods_a + pods_b, inventories)
    report(
        "TaskRuns in A naming B's Secrets",
        spellings=len(cases) + len(templates) + 2,
        rejected_by_schema_or_server=len(rejected),
        held=dict(Counter(r for n, r in reasons.items() if n != "template-namespace")),
        pods_in_a=len(pods_a),
        pods_in_b=len(pods_b),
        cross_namespace_deliveries=len(crossing) + len(pods_b),
    )
    assert crossing == []
    assert pods_b == []
    assert [p["metadata"]["name"] for p in pods_a] == ["template-namespace"]
    assert reasons.pop("template-namespace") == "SecretsFound"
    assert set(reasons.values()) <= HELD, reasons
    assert all(reasons[name] == "DirectSecretReference" for name in templates), reasons
    assert all(message.startswith(("422 ", "400 ")) for message in rejected.values()), rejected
    assert all("\n" not in message for message in rejected.values()), rejected
    assert "does not match the namespace" in said_b, said_b
    assert canary not in runner.output


@pytest.fixture
def webhook_env(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = f"sesame-isolation-{namespace}"
    monkeypatch.setenv("SESAME_WEBHOOK", "local")
    monkeypatch.setenv("SESAME_WEBHOOK_PORT", str(port))
    monkeypatch.setenv("SESAME_WEBHOOK_CERT_DIR", str(tmp_path / "certs"))
    monkeypatch.setenv("SESAME_WEBHOOK_CONFIG_NAME", name)
    monkeypatch.setenv("SESAME_WEBHOOK_NAMESPACES", namespace)
    try:
        yield
    finally:
        delete_configuration(cluster.api, name)


def labelled_pod(
    name: str, annotation: str, containers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {naming.INJECT_LABEL: "true"},
            "annotations": {naming.SECRETS_ANNOTATION: annotation},
        },
        "spec": {"restartPolicy": "Never", "containers": containers or [MAIN]},
    }


@pytest.mark.local_plane  # the API server calls a loopback webhook
def test_no_annotation_in_a_reaches_b(
    cluster: Cluster, namespace: str, other: str, canary: str, webhook_env: None
) -> None:
    cluster.create_secret(namespace, "shared", {"user": "mine"})
    cases = spellings(other)
    denied: dict[str, str] = {}
    admitted: list[dict[str, Any]] = []
    with running_operator([namespace, other]) as runner:

        def serving() -> bool:
            try:
                pod = cluster.core.create_namespaced_pod(
                    namespace, labelled_pod("probe", "[]"), dry_run="All"
                )
            except ApiException:
                return False
            return naming.INJECTED_ANNOTATION in (pod.metadata.annotations or {})

        eventually(serving, timeout=60, what="the webhook to serve")
        for name, requests in cases.items():
            refused: ApiException | None = None
            try:
                pod = cluster.core.create_namespaced_pod(namespace, labelled_pod(name, json.dumps(requests)))
                admitted.append(cluster.api.sanitize_for_serialization(pod))
            except ApiException as error:
                refused = error
            if refused is not None:
                denied[name] = json.loads(refused.body or "{}").get("message", "")
                leaks.record(f"webhook denial for {name}", denied[name])
                # Denied by Sesame, and for this request: not a webhook that failed (500).
                assert refused.status in (400, 403), (name, refused.status, denied[name])
                assert denied[name].startswith(DENIED), (name, denied[name])
        # The user's own reference in a webhook pod is left alone: it is the user's pod, created
        # with the user's rights, and Kubernetes resolves it in A (where it does not exist).
        own = [
            {
                **MAIN,
                "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "their-creds", "key": "password"}}}
                ],
            }
        ]
        kept = cluster.core.create_namespaced_pod(
            namespace, labelled_pod("own-ref", "[]", own), dry_run="All"
        )
        kept_env = cluster.api.sanitize_for_serialization(kept)["spec"]["containers"][0]["env"]
    pods_b = pods_of(cluster.api, other)
    report(
        "pod annotations in A naming B's Secrets",
        spellings=len(cases),
        denied=len(denied),
        admitted=len(admitted),
        pods_in_b=len(pods_b),
        cross_namespace_deliveries=len(admitted) + len(pods_b),
    )
    assert admitted == []
    assert pods_b == []
    assert all(message and "\n" not in message for message in denied.values()), denied
    assert all(canary not in message for message in denied.values())
    own_ref = next(e for e in kept_env if e["name"] == "X")["valueFrom"]["secretKeyRef"]
    assert (own_ref["name"], own_ref["key"]) == ("their-creds", "password")
    assert canary not in runner.output
