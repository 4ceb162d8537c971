"""The pod admission webhook against the real API server, which calls it over TLS (DESIGN.md §4).

Each test runs the operator in-process with SESAME_WEBHOOK=local on a free port, its own
certificate directory and its own MutatingWebhookConfiguration, scoped to the test's namespace
(SESAME_WEBHOOK_NAMESPACES) so tests running in parallel namespaces never meet it. The fixture
deletes the configuration at the end, whatever happened.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from sesame.webhook.configuration import WEBHOOK_NAME, delete_configuration
from tests.support.cluster import Cluster, eventually
from tests.support.operator import running_operator
from tests.support.tasks import proof, reporting_container, reports

# The API server calls the webhook on loopback: only the suite's own control plane can.
pytestmark = pytest.mark.local_plane

INJECT = {"sesame.dev/inject": "true"}
MANAGED = {
    "labels": {"app.kubernetes.io/managed-by": "sesame"},
}


def pod_body(
    name: str,
    requests: Any = None,
    *,
    labelled: bool = True,
    raw_annotation: str | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A pod without metadata.namespace: the webhook must take it from the request."""
    annotations = {}
    if raw_annotation is not None:
        annotations["sesame.dev/secrets"] = raw_annotation
    elif requests is not None:
        annotations["sesame.dev/secrets"] = json.dumps(requests)
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["true"]}
    if env:
        container["env"] = env
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(INJECT) if labelled else {}, "annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


def create_pod(
    cluster: Cluster, namespace: str, body: dict[str, Any], dry_run: bool = False
) -> dict[str, Any]:
    core: Any = cluster.core  # the client takes plain dicts
    created = core.create_namespaced_pod(namespace, body, dry_run="All" if dry_run else None)
    result: dict[str, Any] = cluster.api.sanitize_for_serialization(created)
    return result


def read_configuration(cluster: Cluster, name: str) -> dict[str, Any]:
    found = client.AdmissionregistrationV1Api(cluster.api).read_mutating_webhook_configuration(name)
    result: dict[str, Any] = cluster.api.sanitize_for_serialization(found)
    return result


def denial(cluster: Cluster, namespace: str, body: dict[str, Any]) -> ApiException:
    with pytest.raises(ApiException) as refused:
        create_pod(cluster, namespace, body)
    assert cluster.pod(namespace, body["metadata"]["name"]) is None
    return refused.value


def message_of(error: ApiException) -> str:
    return str(json.loads(error.body or "{}").get("message", ""))


def wait_until_serving(cluster: Cluster, namespace: str) -> None:
    """The API server calls the webhook: a dry-run labelled pod comes back annotated."""

    def annotated() -> bool:
        with contextlib.suppress(ApiException):  # failurePolicy Fail while the server starts
            pod = create_pod(cluster, namespace, pod_body("probe", []), dry_run=True)
            return "sesame.dev/injected" in (pod["metadata"].get("annotations") or {})
        return False

    eventually(annotated, timeout=60, interval=0.2, what="the webhook to serve")


def admissions(result: str) -> float:
    return REGISTRY.get_sample_value("sesame_webhook_admissions_total", {"result": result}) or 0.0


def problems(reason: str) -> float:
    labels = {"reason": reason, "source": "webhook"}
    return REGISTRY.get_sample_value("sesame_injection_problems_total", labels) or 0.0


def env_of(pod: dict[str, Any], container: int = 0) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod["spec"]["containers"][container].get("env") or []}


def test_labelled_pods_get_their_secrets_and_bad_requests_are_denied(
    cluster: Cluster, namespace: str, webhook: str, canary: str
) -> None:
    cluster.create_secret(namespace, "my-secret", {"my_secret": canary}, **MANAGED)
    cluster.create_secret(namespace, "my-file", {"my_file": canary}, **MANAGED)
    cluster.create_secret(namespace, "db-creds", {"password": canary}, labels={"sesame.dev/usable": "true"})
    returned: list[dict[str, Any]] = []
    with running_operator([namespace]) as runner:
        wait_until_serving(cluster, namespace)
        configuration = read_configuration(cluster, webhook)
        assert [w["name"] for w in configuration["webhooks"]] == [WEBHOOK_NAME]
        assert configuration["webhooks"][0]["clientConfig"]["url"].startswith("https://127.0.0.1:")
        allowed_before, denied_before = admissions("allowed"), admissions("denied")
        not_found_before = problems("SecretNotFound")

        requests = [
            {"key": "my_secret"},
            {"key": "my_file", "mountRequirement": "FILE"},
            {"key": "db", "from": {"secret": "db-creds", "key": "password"}, "envVar": "DB_PASSWORD"},
        ]
        pod = create_pod(cluster, namespace, pod_body("labelled", requests))
        returned.append(pod)
        env = env_of(pod)
        assert env["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": "my-secret",
            "key": "my_secret",
            "optional": False,
        }
        assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "db-creds"
        assert env["SESAME_SECRETS_DIR"]["value"] == "/etc/sesame/secrets"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        projected = volumes["sesame-secrets"]["projected"]
        assert projected["sources"] == [
            {
                "secret": {
                    "name": "my-file",
                    "items": [{"key": "my_file", "path": "my_file", "mode": 0o440}],
                    "optional": False,
                }
            }
        ]
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "sesame-secrets", "mountPath": "/etc/sesame/secrets", "readOnly": True} in mounts
        injected = json.loads(pod["metadata"]["annotations"]["sesame.dev/injected"])
        assert {d["key"] for d in injected} == {"my_secret", "my_file", "db"}
        stored = cluster.pod(namespace, "labelled")
        assert stored is not None
        assert env_of(stored).keys() == env.keys()
        assert (
            stored["metadata"]["annotations"]["sesame.dev/injected"]
            == pod["metadata"]["annotations"]["sesame.dev/injected"]
        )

        # A Secret created a moment ago (the watch may not have it yet) is found by the live read.
        cluster.create_secret(namespace, "fresh", {"fresh": canary}, **MANAGED)
        fresh = create_pod(cluster, namespace, pod_body("fresh", [{"key": "fresh"}]))
        returned.append(fresh)
        assert env_of(fresh)["SESAME_SECRET_FRESH"]["valueFrom"]["secretKeyRef"]["name"] == "fresh"

        # generateName: no name yet at admission time.
        generated = pod_body("ignored", [{"key": "my_secret"}])
        generated["metadata"] = {**generated["metadata"], "generateName": "gen-"}
        del generated["metadata"]["name"]
        made = create_pod(cluster, namespace, generated)
        returned.append(made)
        assert made["metadata"]["name"].startswith("gen-")
        assert "SESAME_SECRET_MY_SECRET" in env_of(made)

        # Unlabelled: never sent to the webhook (with the annotation, the API server's own
        # admission policy refuses it: tests/integration/test_consent.py).
        plain = create_pod(cluster, namespace, pod_body("unlabelled", labelled=False))
        returned.append(plain)
        assert "env" not in plain["spec"]["containers"][0]
        assert "sesame.dev/injected" not in (plain["metadata"].get("annotations") or {})

        # Bad requests: DENIED with Sesame's one-line message.
        cases = [
            (pod_body("bad-json", raw_annotation='[{"key": "my_secret"'), 400, "is not valid JSON"),
            (pod_body("no-annotation"), 400, "annotation sesame.dev/secrets is missing"),
            (
                pod_body("unknown-field", [{"key": "my_secret", "mount": "FILE"}]),
                400,
                "unknown field 'mount'",
            ),
            (
                pod_body("missing", [{"key": "not_there"}]),
                403,
                f"run `sesame create secret --namespace {namespace} not_there`",
            ),
            (
                pod_body("no-key", [{"key": "x", "from": {"secret": "db-creds", "key": "user"}}]),
                403,
                "has no data key 'user'",
            ),
            (
                pod_body(
                    "clash", [{"key": "my_secret", "envVar": "TOKEN"}], env=[{"name": "TOKEN", "value": "x"}]
                ),
                400,
                "already sets env var 'TOKEN'",
            ),
            (
                pod_body("clash2", [{"key": "my_secret", "envVar": "A"}, {"key": "my_file", "envVar": "A"}]),
                400,
                "both set env var 'A'",
            ),
        ]
        for body, code, fragment in cases:
            error = denial(cluster, namespace, body)
            message = message_of(error)
            assert error.status == code, (body["metadata"]["name"], error.status, message)
            assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in message
            assert fragment in message, message
            assert "\n" not in message
            assert canary not in (error.body or "")
        assert admissions("allowed") >= allowed_before + 2
        assert admissions("denied") >= denied_before + len(cases)
        assert problems("SecretNotFound") >= not_found_before + 1
    assert canary not in runner.output
    assert canary not in json.dumps(returned)


def test_stopped_webhook_refuses_labelled_pods_only(cluster: Cluster, namespace: str, webhook: str) -> None:
    cluster.create_secret(namespace, "my-secret", {"my_secret": "v"}, **MANAGED)
    with running_operator([namespace]):
        wait_until_serving(cluster, namespace)
    # The server is gone; the configuration stays (failurePolicy: Fail).
    assert read_configuration(cluster, webhook)["webhooks"][0]["failurePolicy"] == "Fail"

    plain = create_pod(cluster, namespace, pod_body("unlabelled", labelled=False))
    assert "env" not in plain["spec"]["containers"][0]
    error = denial(cluster, namespace, pod_body("labelled", [{"key": "my_secret"}]))
    assert error.status == 500
    assert f'failed calling webhook "{WEBHOOK_NAME}"' in message_of(error)
    with pytest.raises(ApiException):  # dry-run too: never admitted without its secrets
        create_pod(cluster, namespace, pod_body("labelled", [{"key": "my_secret"}]), dry_run=True)

    assert delete_configuration(cluster.api, webhook)
    with pytest.raises(ApiException) as gone:
        read_configuration(cluster, webhook)
    assert gone.value.status == 404


def job(name: str, requests: list[dict[str, Any]], container: dict[str, Any] | None = None) -> dict[str, Any]:
    pod = pod_body("unused", requests)
    del pod["metadata"]["name"]
    if container is not None:
        pod["spec"]["containers"] = [container]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
    }


def test_pods_of_a_job_are_injected_and_a_bad_job_says_why(
    cluster: Cluster, namespace: str, webhook: str, canary: str
) -> None:
    """kube-controller-manager's Job controller creates the pods, as other workflow engines do."""
    cluster.store_secret(namespace, "my_secret", canary)
    batch: Any = client.BatchV1Api(cluster.api)
    with running_operator([namespace]) as runner:
        wait_until_serving(cluster, namespace)
        reporter = reporting_container("main", ["my_secret"])
        batch.create_namespaced_job(namespace, job("good", [{"key": "my_secret"}], reporter))
        batch.create_namespaced_job(namespace, job("bad", [{"key": "absent_key"}]))

        def pods_of(job_name: str) -> list[dict[str, Any]]:
            found = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
            return [cluster.api.sanitize_for_serialization(p) for p in found.items]

        [pod] = eventually(lambda: pods_of("good"), timeout=60, what="the Job's pod")
        assert pod["metadata"]["name"].startswith("good-")
        ref = env_of(pod)["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("my-secret", "my_secret")
        assert "sesame.dev/injected" in pod["metadata"]["annotations"]

        def refusal() -> str | None:
            events = cluster.core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=bad,reason=FailedCreate"
            ).items
            return next((e.message for e in events if "absent_key" in (e.message or "")), None)

        message = eventually(refusal, timeout=60, what="the Job's FailedCreate event")
        assert "sesame create secret" in message, message
        assert pods_of("bad") == []  # never a pod without its secrets

        def complete() -> bool:
            conditions = batch.read_namespaced_job_status("good", namespace).status.conditions or []
            failed = [c.message for c in conditions if c.type == "Failed" and c.status == "True"]
            assert not failed, f"the Job failed: {failed}"
            return any(c.type == "Complete" and c.status == "True" for c in conditions)

        eventually(complete, timeout=90, what="the Job to complete on the node")
        report = reports(cluster, namespace, pod["metadata"]["name"], ["main"])["main"]
        assert report["values"] == {"my_secret": proof(canary)}  # the kubelet delivered it
    print(f"\n[webhook] the Job controller was told: {message}")  # (KopfRunner captures stdout above)
    assert canary not in runner.output


def test_generated_certificates_rotate_in_the_running_operator(
    cluster: Cluster, namespace: str, webhook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12 s certificate is replaced after ~8 s: the configuration first trusts both CAs, then the
    new one alone; labelled pods keep being injected, and none is ever admitted without it."""
    monkeypatch.setenv("SESAME_WEBHOOK_CERT_VALIDITY_SECONDS", "12")
    cluster.store_secret(namespace, "my_secret", "value")

    def ca_bundles() -> list[str]:
        return [w["clientConfig"]["caBundle"] for w in read_configuration(cluster, webhook)["webhooks"]]

    with running_operator([namespace]) as runner:
        wait_until_serving(cluster, namespace)
        [first] = ca_bundles()
        seen, injected, refused = [first], 0, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < 3:
            try:
                pod = create_pod(cluster, namespace, pod_body("probe", [{"key": "my_secret"}]), dry_run=True)
            except ApiException as error:
                refused.append(message_of(error))
            else:
                assert "SESAME_SECRET_MY_SECRET" in env_of(pod)  # admitted means injected, always
                injected += 1
            [current] = ca_bundles()
            if current != seen[-1]:
                seen.append(current)
            time.sleep(0.1)
        pod = create_pod(cluster, namespace, pod_body("after", [{"key": "my_secret"}]), dry_run=True)
        assert "SESAME_SECRET_MY_SECRET" in env_of(pod)
    print(f"\n[webhook] rotation: {injected} injected, {len(refused)} refused: {refused[:3]}")
    assert refused == [], "admissions failed during the rotation"
    assert injected > 0
    assert len(seen) == 3, f"expected the old CA, both, then the new one; saw {len(seen)} bundles"
    old, both, new = (base64.b64decode(b) for b in seen)
    assert both == old + new  # trusted both during the change
    assert old != new
    # Written by the rotation (a certificate in the last third of its life), not the one at start.
    assert re.search(
        r"generating a webhook CA and serving certificate in \S+: the (serving certificate|CA) expires at ",
        runner.output,
    ), "no rotation in the operator's log"


def test_dry_run_returns_the_mutated_pod_and_persists_nothing(
    cluster: Cluster, namespace: str, webhook: str, canary: str
) -> None:
    cluster.create_secret(namespace, "my-secret", {"my_secret": canary}, **MANAGED)
    with running_operator([namespace]) as runner:
        wait_until_serving(cluster, namespace)
        pod = create_pod(cluster, namespace, pod_body("dry", [{"key": "my_secret"}]), dry_run=True)
        assert env_of(pod)["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "my-secret"
        assert "sesame.dev/injected" in pod["metadata"]["annotations"]
        assert cluster.pod(namespace, "dry") is None
        assert cluster.core.list_namespaced_pod(namespace).items == []
        # A dry-run denial is a denial too, and leaves nothing behind either.
        with pytest.raises(ApiException) as refused:
            create_pod(cluster, namespace, pod_body("dry-missing", [{"key": "absent"}]), dry_run=True)
        assert refused.value.status == 403
        assert cluster.core.list_namespaced_pod(namespace).items == []
    assert canary not in runner.output
    assert canary not in json.dumps(pod)


def test_own_namespace_is_never_sent_to_the_webhook(
    cluster: Cluster, namespace: str, webhook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sesame's own namespace is excluded even when listed: an outage cannot block Sesame itself."""
    own = f"{namespace}-own"
    cluster.create_namespace(own)
    try:
        monkeypatch.setenv("SESAME_NAMESPACE", own)
        monkeypatch.setenv("SESAME_WEBHOOK_NAMESPACES", f"{namespace},{own}")
        with running_operator([namespace]):
            wait_until_serving(cluster, namespace)
            selector = read_configuration(cluster, webhook)["webhooks"][0]["namespaceSelector"]
            assert {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", own],
            } in (selector["matchExpressions"])
            # A request that would be denied if it were sent: admitted as written, so never sent.
            pod = create_pod(cluster, own, pod_body("mine", [{"key": "absent"}]))
            assert "env" not in pod["spec"]["containers"][0]
            with pytest.raises(ApiException):
                create_pod(cluster, namespace, pod_body("theirs", [{"key": "absent"}]))
    finally:
        cluster.delete_namespace(own)


def test_webhook_off_serves_and_registers_nothing(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admission handler is always registered; with SESAME_WEBHOOK=off the operator still runs."""
    name = f"sesame-test-off-{namespace}"
    monkeypatch.setenv("SESAME_WEBHOOK", "off")
    monkeypatch.setenv("SESAME_WEBHOOK_CONFIG_NAME", name)
    cluster.create_secret(namespace, "my-secret", {"my_secret": "v"}, **MANAGED)
    template = {"spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "train", {"secrets": [{"key": "my_secret"}], "template": template})
        eventually(lambda: cluster.pod(namespace, "train"), what="the TaskRun's pod")
    with pytest.raises(ApiException) as absent:
        read_configuration(cluster, name)
    assert absent.value.status == 404
