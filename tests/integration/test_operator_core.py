"""The TaskRun controller against the real API server (DESIGN §1–3, §7)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.cluster import Cluster, eventually
from tests.support.operator import running_operator

MAIN = {"name": "main", "image": "python:3.12-slim", "command": ["python", "-c", "print('hi')"]}
TEMPLATE: dict[str, Any] = {"spec": {"containers": [MAIN]}}


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.taskrun(namespace, name).get("status") or {}
    return status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def events_for(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    return [e for e in cluster.core.list_namespaced_event(namespace).items if e.involved_object.name == name]


def everything_visible(cluster: Cluster, namespace: str) -> str:
    """Statuses, events and pod annotations of a namespace, as one string to grep for canaries."""
    taskruns = cluster.custom.list_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns")
    events = [(e.reason, e.message) for e in cluster.core.list_namespaced_event(namespace).items]
    pods = [p.metadata.annotations for p in cluster.core.list_namespaced_pod(namespace).items]
    return json.dumps([[t.get("status") for t in taskruns["items"]], events, pods], default=str)


def test_every_request_form_is_delivered(cluster: Cluster, namespace: str, canary: str) -> None:
    for key in ("my_secret", "my_union_api_key", "my_file_secret", "gcp_sa"):
        cluster.store_secret(namespace, key, canary)
    cluster.create_secret(namespace, "db-creds", {"password": canary, "user": "app"})
    spec = {
        "secrets": [
            {"key": "my_secret"},
            {"key": "my_union_api_key", "envVar": "UNION_API_KEY"},
            {"key": "my_file_secret", "mountRequirement": "FILE"},
            {"key": "gcp_sa", "mountRequirement": "FILE", "envVar": "GOOGLE_APPLICATION_CREDENTIALS"},
            {"key": "db_password", "from": {"secret": "db-creds", "key": "password"}, "containers": ["main"]},
        ],
        "template": {
            "metadata": {"labels": {"team": "ml"}},
            "spec": {
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "containers": [MAIN, {"name": "sidecar", "image": "busybox"}],
            },
        },
    }
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "train", spec)
        pod = eventually(lambda: cluster.pod(namespace, "train"), what="the TaskRun's pod")
        status = eventually(
            lambda: (
                status_of(cluster, namespace, "train").get("podName")
                and status_of(cluster, namespace, "train")
            ),
            what="status.podName",
        )
    containers = {c["name"]: c for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]}
    main_env = {e["name"]: e for e in containers["main"]["env"]}
    ref = main_env["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("my-secret", "my_secret")
    assert main_env["UNION_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "my-union-api-key"
    assert main_env["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/etc/sesame/secrets/gcp_sa"
    db = main_env["SESAME_SECRET_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (db["name"], db["key"]) == ("db-creds", "password")
    assert "SESAME_SECRET_DB_PASSWORD" not in {e["name"] for e in containers["sidecar"]["env"]}
    assert "SESAME_SECRET_MY_SECRET" in {e["name"] for e in containers["setup"]["env"]}
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "sesame-secrets")
    paths = {i["path"] for s in volume["projected"]["sources"] for i in s["secret"]["items"]}
    assert paths == {"my_file_secret", "gcp_sa"}
    mount = next(m for m in containers["main"]["volumeMounts"] if m["name"] == "sesame-secrets")
    assert mount["mountPath"] == "/etc/sesame/secrets"
    assert mount["readOnly"] is True
    assert "subPath" not in mount
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["metadata"]["labels"] == {"team": "ml", "sesame.dev/taskrun": "train"}
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TaskRun", "train", True)
    assert status["phase"] == "Pending"
    assert condition(status, "SecretsReady")["status"] == "True"
    assert condition(status, "PodCreated")["status"] == "True"
    assert {s["key"]: s["delivery"] for s in status["secrets"]} == {
        "my_secret": "env",
        "my_union_api_key": "env",
        "my_file_secret": "file",
        "gcp_sa": "file",
        "db_password": "env",
    }
    assert canary not in runner.output
    assert canary not in everything_visible(cluster, namespace)


def test_missing_secret_waits_then_proceeds_by_itself(cluster: Cluster, namespace: str, canary: str) -> None:
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "late", {"secrets": [{"key": "api_token"}], "template": TEMPLATE})
        status = eventually(
            lambda: (
                condition(status_of(cluster, namespace, "late"), "SecretsReady").get("reason")
                == "SecretNotFound"
                and status_of(cluster, namespace, "late")
            ),
            what="SecretsReady=False/SecretNotFound",
        )
        ready = condition(status, "SecretsReady")
        assert ready["status"] == "False"
        assert f"sesame create secret --namespace {namespace} api_token" in ready["message"]
        assert status["phase"] == "Pending"
        warnings = eventually(
            lambda: [e for e in events_for(cluster, namespace, "late") if e.type == "Warning"],
            what="a Warning event",
        )
        assert warnings[0].reason == "SecretNotFound"
        assert cluster.pod(namespace, "late") is None
        cluster.store_secret(namespace, "api_token", canary)
        eventually(
            lambda: cluster.pod(namespace, "late"), timeout=10, what="the pod after the secret appeared"
        )
        eventually(
            lambda: condition(status_of(cluster, namespace, "late"), "SecretsReady").get("status") == "True",
            what="SecretsReady=True",
        )
        cluster.set_pod_phase(namespace, "late", "Running")
        eventually(lambda: status_of(cluster, namespace, "late").get("phase") == "Running", what="Running")
        cluster.set_pod_phase(namespace, "late", "Succeeded")
        status = eventually(
            lambda: (
                status_of(cluster, namespace, "late").get("phase") == "Succeeded"
                and status_of(cluster, namespace, "late")
            ),
            what="Succeeded",
        )
    assert condition(status, "Succeeded")["status"] == "True"
    assert status["completionTime"]
    waits = [line for line in runner.output.splitlines() if "waits: SecretNotFound" in line]
    assert len(waits) <= 2, "no retry storm while waiting"
    assert canary not in runner.output
    assert canary not in everything_visible(cluster, namespace)


def test_missing_data_key_in_from_secret(cluster: Cluster, namespace: str) -> None:
    cluster.create_secret(namespace, "db-creds", {"user": "app"})
    spec = {
        "secrets": [{"key": "db", "from": {"secret": "db-creds", "key": "password"}}],
        "template": TEMPLATE,
    }
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "tr", spec)
        ready = eventually(
            lambda: (
                condition(status_of(cluster, namespace, "tr"), "SecretsReady").get("reason") == "KeyNotFound"
                and condition(status_of(cluster, namespace, "tr"), "SecretsReady")
            ),
            what="KeyNotFound",
        )
    assert "'db-creds'" in ready["message"]
    assert "'password'" in ready["message"]
    assert cluster.pod(namespace, "tr") is None


@pytest.mark.parametrize(
    ("secrets", "env", "fragment"),
    [
        ([{"key": "a", "envVar": "SAME"}, {"key": "b", "envVar": "SAME"}], [], "both set env var 'SAME'"),
        (
            [{"key": "a", "envVar": "HOME"}],
            [{"name": "HOME", "value": "/root"}],
            "already sets env var 'HOME'",
        ),
    ],
)
def test_env_clash_is_a_clear_condition_and_no_pod(
    cluster: Cluster, namespace: str, secrets: list[dict[str, Any]], env: list[dict[str, Any]], fragment: str
) -> None:
    cluster.store_secret(namespace, "a", "x")
    cluster.store_secret(namespace, "b", "y")
    template = {"spec": {"containers": [{**MAIN, "env": env}]}}
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "clash", {"secrets": secrets, "template": template})
        ready = eventually(
            lambda: (
                condition(status_of(cluster, namespace, "clash"), "SecretsReady").get("reason")
                == "EnvVarClash"
                and condition(status_of(cluster, namespace, "clash"), "SecretsReady")
            ),
            what="EnvVarClash",
        )
    assert fragment in ready["message"]
    assert cluster.pod(namespace, "clash") is None


def test_no_spelling_reaches_another_namespace(cluster: Cluster, namespace: str, canary: str) -> None:
    other = f"{namespace}-other"
    cluster.create_namespace(other)
    try:
        cluster.store_secret(other, "their_secret", canary)
        cluster.create_secret(other, "their-creds", {"password": canary})
        with running_operator([namespace, other]) as runner:
            cluster.create_taskrun(
                namespace, "plain", {"secrets": [{"key": "their_secret"}], "template": TEMPLATE}
            )
            spec = {
                "secrets": [{"key": "p", "from": {"secret": "their-creds", "key": "password"}}],
                "template": TEMPLATE,
            }
            cluster.create_taskrun(namespace, "from", spec)
            # a dotted name is a valid Secret name — of this namespace; it must not resolve elsewhere
            dotted = {
                "secrets": [{"key": "p", "from": {"secret": f"their-creds.{other}", "key": "password"}}],
                "template": TEMPLATE,
            }
            cluster.create_taskrun(namespace, "dotted", dotted)
            for name in ("plain", "from", "dotted"):
                eventually(
                    lambda name=name: (
                        condition(status_of(cluster, namespace, name), "SecretsReady").get("reason")
                        == "SecretNotFound"
                    ),
                    what=f"{name}: SecretNotFound",
                )
            direct = {
                "spec": {
                    "containers": [
                        {
                            **MAIN,
                            "env": [
                                {
                                    "name": "X",
                                    "valueFrom": {"secretKeyRef": {"name": "their-creds", "key": "password"}},
                                }
                            ],
                        }
                    ]
                }
            }
            cluster.create_taskrun(namespace, "direct", {"secrets": [], "template": direct})
            eventually(
                lambda: (
                    condition(status_of(cluster, namespace, "direct"), "SecretsReady").get("reason")
                    == "DirectSecretReference"
                ),
                what="DirectSecretReference",
            )
        for spelling in (
            f"{other}/their-creds",
            f"../{other}/their-creds",
            "their-creds.",
            f"{other}:their-creds",
        ):
            bad = {
                "secrets": [{"key": "p", "from": {"secret": spelling, "key": "password"}}],
                "template": TEMPLATE,
            }
            with pytest.raises(ApiException) as error:
                cluster.create_taskrun(namespace, "sneaky", bad)
            assert error.value.status == 422
        assert cluster.core.list_namespaced_pod(namespace).items == []
        assert canary not in runner.output
    finally:
        cluster.delete_namespace(other)


@pytest.mark.parametrize(
    ("secrets", "fragment"),
    [
        ([{"key": "a", "mountRequirement": "VOLUME"}], 'supported values: "ENV_VAR", "FILE", "ANY"'),
        ([{"key": ""}], "should be at least 1 chars long"),
        ([{"key": "a", "envVar": "1-BAD"}], "spec.secrets[0].envVar"),
        ([{"key": "a", "from": {"secret": "x"}}], "spec.secrets[0].from.key: Required value"),
        ([{"key": "-a"}], "maps to a valid Secret name"),
        ([{"key": "a"}, {"key": "a"}], "Duplicate value"),
    ],
)
def test_schema_rejects_malformed_specs(
    cluster: Cluster, namespace: str, secrets: list[dict[str, Any]], fragment: str
) -> None:
    with pytest.raises(ApiException) as error:
        cluster.create_taskrun(namespace, "bad", {"secrets": secrets, "template": TEMPLATE})
    assert error.value.status == 422
    assert fragment in json.loads(error.value.body)["message"]


def test_spec_is_immutable(cluster: Cluster, namespace: str) -> None:
    cluster.create_taskrun(namespace, "fixed", {"secrets": [{"key": "a"}], "template": TEMPLATE})
    with pytest.raises(ApiException) as error:
        cluster.custom.patch_namespaced_custom_object(
            "sesame.dev", "v1alpha1", namespace, "taskruns", "fixed", {"spec": {"secrets": [{"key": "b"}]}}
        )
    assert "spec is immutable after creation" in json.loads(error.value.body)["message"]


def test_failed_pod_reports_reason_and_exit_code(cluster: Cluster, namespace: str) -> None:
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "boom", {"secrets": [], "template": TEMPLATE})
        eventually(lambda: cluster.pod(namespace, "boom"), what="pod")
        cluster.set_pod_phase(namespace, "boom", "Failed", exit_code=3)
        status = eventually(
            lambda: (
                status_of(cluster, namespace, "boom").get("phase") == "Failed"
                and status_of(cluster, namespace, "boom")
            ),
            what="Failed",
        )
    succeeded = condition(status, "Succeeded")
    assert succeeded["status"] == "False"
    assert succeeded["reason"] == "Error"
    assert "exited with code 3" in succeeded["message"]


def test_deleting_the_taskrun_deletes_its_pod(cluster: Cluster, namespace: str) -> None:
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "gone", {"secrets": [], "template": TEMPLATE})
        eventually(lambda: cluster.pod(namespace, "gone"), what="pod")
    cluster.custom.delete_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns", "gone")
    eventually(
        lambda: cluster.pod(namespace, "gone") is None, timeout=60, what="garbage collection of the pod"
    )


def test_restarted_operator_keeps_one_pod_per_taskrun(cluster: Cluster, namespace: str) -> None:
    cluster.store_secret(namespace, "k", "v")
    names = [f"run-{i}" for i in range(30)]
    with running_operator([namespace]):
        for name in names:
            cluster.create_taskrun(namespace, name, {"secrets": [{"key": "k"}], "template": TEMPLATE})
        eventually(lambda: len(cluster.core.list_namespaced_pod(namespace).items) >= 5, what="some pods")
    # stopped mid-way; a pod may exist whose TaskRun status was never written
    with running_operator([namespace]):
        eventually(
            lambda: all(status_of(cluster, namespace, n).get("podName") == n for n in names),
            timeout=60,
            what="every TaskRun to have its pod recorded",
        )
    pods = cluster.core.list_namespaced_pod(namespace).items
    assert sorted(p.metadata.name for p in pods) == sorted(names)
    for pod in pods:
        assert [r.name for r in pod.metadata.owner_references] == [pod.metadata.name]


def test_a_foreign_pod_with_the_same_name_is_not_adopted(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(
        namespace, {"metadata": {"name": "taken"}, "spec": {"containers": [MAIN]}}
    )
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "taken", {"secrets": [], "template": TEMPLATE})
        created = eventually(
            lambda: (
                condition(status_of(cluster, namespace, "taken"), "PodCreated").get("reason")
                == "PodNameTaken"
                and condition(status_of(cluster, namespace, "taken"), "PodCreated")
            ),
            what="PodNameTaken",
        )
    assert "not owned by this TaskRun" in created["message"]


def test_a_pod_deleted_or_unlabelled_before_it_finished_fails_its_taskrun(
    cluster: Cluster, namespace: str
) -> None:
    """The operator watches only labelled pods, so a TaskRun pod losing its label is, to it, gone."""
    cluster.store_secret(namespace, "my_secret", "value")
    spec = {"secrets": [{"key": "my_secret"}], "template": TEMPLATE}
    with running_operator([namespace]):
        for name in ("deleted", "unlabelled"):
            cluster.create_taskrun(namespace, name, spec)
            eventually(
                lambda name=name: (
                    condition(status_of(cluster, namespace, name), "PodCreated").get("status") == "True"
                ),
                what=f"pod {name} created",
            )
        cluster.core.delete_namespaced_pod("deleted", namespace)  # unscheduled: gone at once
        unlabel: Any = [{"op": "remove", "path": "/metadata/labels/sesame.dev~1taskrun"}]
        cluster.core.patch_namespaced_pod("unlabelled", namespace, unlabel)
        for name in ("deleted", "unlabelled"):
            status = eventually(
                lambda name=name: (s := status_of(cluster, namespace, name)).get("phase") == "Failed" and s,
                what=f"TaskRun {name} Failed",
            )
            succeeded = condition(status, "Succeeded")
            assert (succeeded["status"], succeeded["reason"]) == ("False", "PodDeleted")
            assert succeeded["message"] == f"pod {name!r} was deleted before it finished"
        # Failed is final: no second pod is made for the deleted one.
        time.sleep(2)
        assert cluster.pod(namespace, "deleted") is None
    events = cluster.core.list_namespaced_event(namespace).items
    reasons = {(e.involved_object.name, e.reason) for e in events}
    assert {("deleted", "PodDeleted"), ("unlabelled", "PodDeleted")} <= reasons
