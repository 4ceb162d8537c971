"""The TaskRun controller against the real API server and node (DESIGN §1–3, §7).

Pods that must run use Sesame's task image on the local node; pods whose running adds nothing
(the controller's mechanics) are never scheduled (`UNSCHEDULED`), so the node is not loaded.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from sesame.controller.pods import build_pod
from sesame.injection import SecretFacts, inject
from sesame.kube.rest import JsonApi
from sesame.requests import parse_requests
from tests.support.cluster import UNSCHEDULED, Cluster, eventually
from tests.support.operator import running_operator
from tests.support.status import condition, reaching, status_of
from tests.support.tasks import python

QUICK: dict[str, Any] = {"spec": {"containers": [python("main", "print('hi')")]}}
PARKED: dict[str, Any] = {"spec": {"containers": [python("main", "print('hi')")], **UNSCHEDULED}}


def events_for(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    """Events on the TaskRun (its pod, of the same name, has its own)."""
    return [
        e
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.involved_object.name == name and e.involved_object.kind == "TaskRun"
    ]


def everything_visible(cluster: Cluster, namespace: str) -> str:
    """Statuses, events and pod annotations of a namespace, as one string to grep for canaries."""
    taskruns = cluster.custom.list_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns")
    events = [(e.reason, e.message) for e in cluster.core.list_namespaced_event(namespace).items]
    pods = [p.metadata.annotations for p in cluster.core.list_namespaced_pod(namespace).items]
    return json.dumps([[t.get("status") for t in taskruns["items"]], events, pods], default=str)


def test_missing_secret_waits_then_runs_by_itself(cluster: Cluster, namespace: str, canary: str) -> None:
    with running_operator([namespace]) as runner:
        cluster.create_taskrun(namespace, "late", {"secrets": [{"key": "api_token"}], "template": QUICK})
        status = reaching(cluster, namespace, "late", "reason", "SecretNotFound")
        assert status["phase"] == "Pending"
        ready = condition(status, "SecretsReady")
        assert ready["status"] == "False"
        assert f"run `sesame create secret --namespace {namespace} api_token`" in ready["message"]
        assert condition(status, "Reconciling")["status"] == "True"
        assert condition(status, "Stalled")["status"] == "False"
        assert cluster.pod(namespace, "late") is None
        cluster.store_secret(namespace, "api_token", canary)
        status = reaching(cluster, namespace, "late", "phase", "Succeeded", timeout=60)
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "SecretsReady")["status"] == "True"
    assert status["completionTime"]
    assert status["startTime"]
    # Exactly one warning for the wait, however many watch-events it saw.
    warnings = [(e.reason, e.count) for e in events_for(cluster, namespace, "late") if e.type == "Warning"]
    assert warnings == [("SecretNotFound", 1)]
    assert canary not in runner.output
    assert canary not in everything_visible(cluster, namespace)


def test_every_problem_is_named_and_the_status_follows_the_secrets(cluster: Cluster, namespace: str) -> None:
    """Two missing secrets that both want env TOKEN: three problems, and as each secret appears the
    status says what is left — without a restart of the operator."""
    spec = {
        "secrets": [{"key": "have_one", "envVar": "TOKEN"}, {"key": "later_one", "envVar": "TOKEN"}],
        "template": PARKED,
    }
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "clash", spec)
        status = reaching(cluster, namespace, "clash", "reason", "EnvVarClash")
        assert "3 problems: [1] secret 'have_one' not found" in status["message"]
        assert (status["phase"], condition(status, "Stalled")["status"]) == ("Failed", "True")
        timings = []
        for key, left in (
            ("have_one", "2 problems: [1] secret 'later_one' not found"),
            ("later_one", "start as written; secrets 'have_one' and 'later_one' both set"),
        ):
            started = time.monotonic()
            cluster.store_secret(namespace, key, "value")
            status = eventually(
                lambda left=left: (
                    left in (s := status_of(cluster, namespace, "clash")).get("message", "") and s
                ),
                timeout=10,
                interval=0.05,
                what=f"the status after {key} appeared",
            )
            timings.append(round(time.monotonic() - started, 2))
        print(f"\n[status] seconds from Secret create to the status naming what is left: {timings}")
        assert status["message"] == (
            "the run can never start as written; secrets 'have_one' and 'later_one' both set env var "
            "'TOKEN' in container 'main'; give one of them a different envVar"
        )
    assert cluster.pod(namespace, "clash") is None


def test_missing_data_key_in_an_opted_in_secret(cluster: Cluster, namespace: str) -> None:
    cluster.create_secret(namespace, "db-creds", {"user": "app"}, labels={"sesame.dev/usable": "true"})
    spec = {"secrets": [{"key": "db", "from": {"secret": "db-creds", "key": "password"}}], "template": PARKED}
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "tr", spec)
        status = reaching(cluster, namespace, "tr", "reason", "KeyNotFound")
        assert "Secret 'db-creds'" in status["message"]
        assert "has no data key 'password' (it has: user); add that key to the Secret" in status["message"]
        cluster.core.patch_namespaced_secret("db-creds", namespace, {"stringData": {"password": "p"}})
        reaching(cluster, namespace, "tr", "reason", "PodPending")
    assert cluster.pod(namespace, "tr") is not None


def test_a_status_written_by_someone_else_is_put_right(cluster: Cluster, namespace: str) -> None:
    """The operator skips only the watch-event of its own status write; anyone else's is checked."""
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "edited", {"secrets": [{"key": "api_token"}], "template": PARKED})
        truth = reaching(cluster, namespace, "edited", "reason", "SecretNotFound")
        lie = {"phase": "Pending", "reason": "PodPending", "message": "every requested secret exists"}
        cluster.custom.patch_namespaced_custom_object_status(
            "sesame.dev", "v1alpha1", namespace, "taskruns", "edited", {"status": lie}
        )
        restored = reaching(cluster, namespace, "edited", "reason", "SecretNotFound")
    assert restored["message"] == truth["message"]
    assert condition(restored, "SecretsReady")["reason"] == "SecretNotFound"


@pytest.mark.parametrize(
    ("secrets", "env", "fragment"),
    [
        ([{"key": "a", "envVar": "SAME"}, {"key": "b", "envVar": "SAME"}], [], "both set env var 'SAME'"),
        (
            [{"key": "a", "envVar": "TOKEN"}],
            [{"name": "TOKEN", "value": "x"}],
            "already sets env var 'TOKEN'",
        ),
        ([{"key": "my.secret"}, {"key": "my_secret"}], [], "both set env var 'SESAME_SECRET_MY_SECRET'"),
    ],
)
def test_an_env_clash_can_never_run_and_makes_no_pod(
    cluster: Cluster, namespace: str, secrets: list[dict[str, Any]], env: list[dict[str, Any]], fragment: str
) -> None:
    for key in ("a", "b"):
        cluster.store_secret(namespace, key, "x")
    template = {"spec": {"containers": [{**python("main", "pass"), "env": env}], **UNSCHEDULED}}
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "clash", {"secrets": secrets, "template": template})
        status = reaching(cluster, namespace, "clash", "reason", "EnvVarClash")
    assert status["phase"] == "Failed"
    assert condition(status, "Succeeded")["status"] == "False"
    assert fragment in status["message"]
    assert cluster.pod(namespace, "clash") is None


def test_no_spelling_reaches_another_namespace(cluster: Cluster, namespace: str, canary: str) -> None:
    other = f"{namespace}-other"
    cluster.create_namespace(other)
    try:
        cluster.store_secret(other, "their_secret", canary)
        cluster.create_secret(
            other, "their-creds", {"password": canary}, labels={"sesame.dev/usable": "true"}
        )
        with running_operator([namespace, other]) as runner:
            cluster.create_taskrun(
                namespace, "plain", {"secrets": [{"key": "their_secret"}], "template": PARKED}
            )
            spec = {
                "secrets": [{"key": "p", "from": {"secret": "their-creds", "key": "password"}}],
                "template": PARKED,
            }
            cluster.create_taskrun(namespace, "from", spec)
            # a dotted name is a valid Secret name — of this namespace; it must not resolve elsewhere
            dotted = {
                "secrets": [{"key": "p", "from": {"secret": f"their-creds.{other}", "key": "password"}}],
                "template": PARKED,
            }
            cluster.create_taskrun(namespace, "dotted", dotted)
            for name in ("plain", "from", "dotted"):
                reaching(cluster, namespace, name, "reason", "SecretNotFound")
            direct_env = [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "their-creds", "key": "password"}}}
            ]
            direct = {"spec": {"containers": [{**python("main", "pass"), "env": direct_env}], **UNSCHEDULED}}
            cluster.create_taskrun(namespace, "direct", {"secrets": [], "template": direct})
            reaching(cluster, namespace, "direct", "reason", "DirectSecretReference")
        for spelling in (
            f"{other}/their-creds",
            f"../{other}/their-creds",
            "their-creds.",
            f"{other}:their-creds",
        ):
            bad = {
                "secrets": [{"key": "p", "from": {"secret": spelling, "key": "password"}}],
                "template": PARKED,
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
        cluster.create_taskrun(namespace, "bad", {"secrets": secrets, "template": PARKED})
    assert error.value.status == 422
    assert fragment in json.loads(error.value.body)["message"]


def test_spec_is_immutable(cluster: Cluster, namespace: str) -> None:
    cluster.create_taskrun(namespace, "fixed", {"secrets": [{"key": "a"}], "template": PARKED})
    with pytest.raises(ApiException) as error:
        cluster.custom.patch_namespaced_custom_object(
            "sesame.dev", "v1alpha1", namespace, "taskruns", "fixed", {"spec": {"secrets": [{"key": "b"}]}}
        )
    assert "spec is immutable after creation" in json.loads(error.value.body)["message"]


def test_a_failing_task_reports_reason_and_exit_code_and_both_waits_work(
    cluster: Cluster, namespace: str
) -> None:
    boom = {"spec": {"containers": [python("main", "import sys; sys.exit(3)")]}}
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "boom", {"secrets": [], "template": boom})
        cluster.create_taskrun(namespace, "fine", {"secrets": [], "template": QUICK})
        kubectl = [cluster.kubectl(), "-n", namespace, "wait", "--timeout=90s"]
        failed = subprocess.run(
            [*kubectl, "--for=condition=Succeeded=False", "taskrun/boom"],
            capture_output=True,
            text=True,
            check=False,
        )
        succeeded = subprocess.run(
            [*kubectl, "--for=condition=Succeeded", "taskrun/fine"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert failed.returncode == 0, failed.stderr
        assert succeeded.returncode == 0, succeeded.stderr
        table = subprocess.run(
            [cluster.kubectl(), "-n", namespace, "get", "tr"], capture_output=True, text=True, check=True
        ).stdout
    status = status_of(cluster, namespace, "boom")
    assert (status["phase"], status["reason"]) == ("Failed", "Error")
    assert condition(status, "Succeeded")["message"] == "container 'main' exited with code 3 (Error)"
    assert condition(status, "Stalled")["status"] == "True"
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "PHASE", "REASON", "POD", "SECRETS-READY", "AGE"]
    assert {row.split()[0]: row.split()[2] for row in rows} == {"boom": "Error", "fine": "Completed"}


def test_deleting_the_taskrun_deletes_its_pod(cluster: Cluster, namespace: str) -> None:
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "gone", {"secrets": [], "template": PARKED})
        eventually(lambda: cluster.pod(namespace, "gone"), what="pod")
    cluster.custom.delete_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns", "gone")
    eventually(
        lambda: cluster.pod(namespace, "gone") is None, timeout=60, what="garbage collection of the pod"
    )


def test_a_restarted_operator_adopts_the_pod_it_made_before_recording_it(
    cluster: Cluster, namespace: str
) -> None:
    """The window between creating a pod and writing the status: the next operator must adopt the
    pod (record its uid) rather than make another or call the name taken."""
    cluster.store_secret(namespace, "k", "v")
    spec = {"secrets": [{"key": "k"}], "template": PARKED}
    taskrun = cluster.create_taskrun(namespace, "crashed", spec)
    # What the operator builds, created the way it creates it (no operator runs yet).
    result = inject(
        PARKED["spec"], parse_requests(spec["secrets"]), {"k": SecretFacts(frozenset({"k"}))}, namespace
    )
    assert result.pod_spec is not None
    made = cluster.core.create_namespaced_pod(
        namespace, build_pod(taskrun, result.pod_spec, result.deliveries)
    )
    with running_operator([namespace]):
        status = eventually(
            lambda: (s := status_of(cluster, namespace, "crashed")).get("podUID") and s,
            what="the pod adopted",
        )
    assert status["podUID"] == made.metadata.uid
    assert (status["podName"], condition(status, "PodCreated")["status"]) == ("crashed", "True")
    assert [p.metadata.uid for p in cluster.core.list_namespaced_pod(namespace).items] == [made.metadata.uid]


def test_a_foreign_pod_with_the_same_name_is_not_adopted(cluster: Cluster, namespace: str) -> None:
    cluster.core.create_namespaced_pod(namespace, {"metadata": {"name": "taken"}, "spec": PARKED["spec"]})
    with running_operator([namespace]):
        cluster.create_taskrun(namespace, "taken", {"secrets": [], "template": PARKED})
        status = reaching(cluster, namespace, "taken", "reason", "PodNameTaken")
        assert "not owned by this TaskRun" in condition(status, "PodCreated")["message"]
        # Once the name is free, the run goes on by itself.
        cluster.core.delete_namespaced_pod("taken", namespace, grace_period_seconds=0)
        status = eventually(
            lambda: (s := status_of(cluster, namespace, "taken")).get("podUID") and s,
            timeout=60,
            what="own pod",
        )
    pod = cluster.pod(namespace, "taken")
    assert pod is not None
    assert (
        pod["metadata"]["ownerReferences"][0]["uid"] == cluster.taskrun(namespace, "taken")["metadata"]["uid"]
    )


def test_a_pod_deleted_or_unlabelled_before_it_finished_fails_its_taskrun(
    cluster: Cluster, namespace: str
) -> None:
    """The operator watches only labelled pods, so a TaskRun pod losing its label is, to it, gone."""
    cluster.store_secret(namespace, "my_secret", "value")
    spec = {"secrets": [{"key": "my_secret"}], "template": PARKED}
    with running_operator([namespace]):
        for name in ("deleted", "unlabelled"):
            cluster.create_taskrun(namespace, name, spec)
            eventually(
                lambda name=name: status_of(cluster, namespace, name).get("podUID"), what=f"pod {name}"
            )
        cluster.core.delete_namespaced_pod("deleted", namespace)  # unscheduled: gone at once
        unlabel: Any = [{"op": "remove", "path": "/metadata/labels/sesame.dev~1taskrun"}]
        cluster.core.patch_namespaced_pod("unlabelled", namespace, unlabel)
        for name in ("deleted", "unlabelled"):
            status = reaching(cluster, namespace, name, "phase", "Failed")
            succeeded = condition(status, "Succeeded")
            assert (succeeded["status"], succeeded["reason"]) == ("False", "PodDeleted")
            assert succeeded["message"] == f"pod {name!r} was deleted before it finished"
        # The Failed status is written by the same pass that would have made a new pod: none came.
        assert cluster.pod(namespace, "deleted") is None
    reasons = {
        (e.involved_object.name, e.reason) for e in cluster.core.list_namespaced_event(namespace).items
    }
    assert {("deleted", "PodDeleted"), ("unlabelled", "PodDeleted")} <= reasons


def test_a_taskrun_deleted_and_created_again_gets_its_own_pod_every_time(
    cluster: Cluster, namespace: str
) -> None:
    """`kubectl replace --force`, Argo CD's Replace=true and CI pipelines that reuse names: the new
    TaskRun must not be held by (or adopt) the old one's pod, which is still being collected."""
    sleeper = {
        "spec": {
            "containers": [python("main", "import time; time.sleep(30)")],
            "terminationGracePeriodSeconds": 2,
        }
    }
    spec = {"secrets": [], "template": sleeper}
    api = client.CustomObjectsApi(cluster.api)
    waits = []
    with running_operator([namespace]):
        previous_uid = None
        for attempt in range(5):
            created = cluster.create_taskrun(namespace, "again", spec)
            uid = created["metadata"]["uid"]
            started = time.monotonic()
            status = eventually(
                lambda: (s := status_of(cluster, namespace, "again")).get("phase") == "Running" and s,
                timeout=90,
                what=f"attempt {attempt}: the new TaskRun's pod running",
            )
            waits.append(round(time.monotonic() - started, 1))
            pod = cluster.pod(namespace, "again")
            assert pod is not None
            assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
            assert status["podUID"] == pod["metadata"]["uid"]
            assert uid != previous_uid
            previous_uid = uid
            api.delete_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns", "again")
            eventually(
                lambda: (
                    not api.list_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns")[
                        "items"
                    ]
                ),
                what="the TaskRun gone",
            )
    print(f"\n[recreate] seconds from create to the new pod running, per attempt: {waits}")


def denials(cluster: Cluster, policy: str) -> int:
    """Requests the API server refused through `policy` (its own metric)."""
    text = JsonApi(cluster.api).raw("GET", "/metrics", accept="text/plain").decode()
    prefix = "apiserver_validating_admission_policy_check_duration_seconds_count{"
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(prefix) and f'policy="{policy}"' in line and 'enforcement_action="deny"' in line
    )


def test_a_status_write_refused_for_a_while_ends_with_the_newest_status(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While every status write of the namespace is refused (by an admission policy), the pod runs
    and finishes; once writes pass again, the status that lands is the newest, never an older one.
    Retries back off to at most 2 s here (30 s by default), so the retry comes soon after."""
    monkeypatch.setenv("SESAME_RETRY_MAX_SECONDS", "2")
    admission = client.AdmissionregistrationV1Api(cluster.api)
    name = f"refuse-status-{namespace}"
    policy = {
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["sesame.dev"],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["taskruns/status"],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "status writes refused for this test"}],
        },
    }
    binding = {
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    task = {"spec": {"containers": [python("main", "import time; time.sleep(3)")]}}
    phases: list[str] = []
    stop = threading.Event()

    def record() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            client.CustomObjectsApi(cluster.api).list_namespaced_custom_object,
            "sesame.dev",
            "v1alpha1",
            namespace,
            "taskruns",
            timeout_seconds=120,
        ):
            phase = (event["object"].get("status") or {}).get("phase")
            if phase and (not phases or phases[-1] != phase):
                phases.append(phase)
            if stop.is_set():
                stream.stop()

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        with running_operator([namespace]):
            cluster.create_taskrun(namespace, "busy", {"secrets": [], "template": task})
            eventually(lambda: status_of(cluster, namespace, "busy").get("podUID"), what="the pod recorded")
            admission.create_validating_admission_policy(policy)
            admission.create_validating_admission_policy_binding(binding)

            def refused() -> bool:
                try:
                    probe = {"status": {"message": "probe"}}
                    cluster.custom.patch_namespaced_custom_object_status(
                        "sesame.dev", "v1alpha1", namespace, "taskruns", "busy", probe, dry_run="All"
                    )
                except ApiException as error:
                    return "status writes refused for this test" in str(error.body)
                return False

            eventually(refused, what="the policy to refuse status writes")
            running = (cluster.pod(namespace, "busy") or {}).get("status", {}).get("phase")
            assert running != "Succeeded", "the pod finished before the policy was in force: sleep longer"
            eventually(
                lambda: (cluster.pod(namespace, "busy") or {}).get("status", {}).get("phase") == "Succeeded",
                timeout=60,
                what="the pod to finish while status writes are refused",
            )
            seen = denials(cluster, name)
            eventually(
                lambda: denials(cluster, name) > seen, what="a status write refused after the pod finished"
            )
            assert status_of(cluster, namespace, "busy").get("phase") != "Succeeded"
            admission.delete_validating_admission_policy_binding(name)
            admission.delete_validating_admission_policy(name)
            status = reaching(cluster, namespace, "busy", "phase", "Succeeded", timeout=60)
            # Nothing older lands afterwards: the next watch-event still says Succeeded.
            cluster.custom.patch_namespaced_custom_object(
                "sesame.dev",
                "v1alpha1",
                namespace,
                "taskruns",
                "busy",
                {"metadata": {"labels": {"poke": "1"}}},
            )
            eventually(lambda: cluster.taskrun(namespace, "busy")["metadata"].get("labels"), what="the poke")
            assert status_of(cluster, namespace, "busy")["phase"] == "Succeeded"
    finally:
        stop.set()
        for delete in (
            admission.delete_validating_admission_policy_binding,
            admission.delete_validating_admission_policy,
        ):
            with contextlib.suppress(ApiException):
                delete(name)
    assert condition(status, "Succeeded")["status"] == "True"
    assert phases[-1] == "Succeeded"
    assert "Succeeded" not in phases[:-1], phases
