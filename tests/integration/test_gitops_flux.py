"""GitOps for real: Flux's own controllers (built from their Go modules, run as local processes on
loopback) apply TaskRuns and install Sesame from a git repository this test serves over smart
HTTP, using the examples of gitops/flux/ as written (only the repository URLs change).

Two stories, one Flux start:

- TaskRuns from git, the operator in-process: a commit adds a namespace and a TaskRun before the
  operator runs, and Flux must not call it Ready; the operator waits for the secret (Progressing,
  not failed), the secret is made with the CLI after the commit, the task runs on the node and the
  Kustomization turns Ready; a request that can never be met and a task that fails each fail the
  Kustomization at once; an edited TaskRun stops the Kustomization with the CRD's message saying
  what to do, until `force: true` replaces it (old pod gone, new one run); the example's per-object
  force annotation does the same without touching the Kustomization; a TaskRun removed from git is
  pruned with its pod.
- Sesame installed by a HelmRelease whose chart comes from a git repository: the operator image
  runs in the cluster; a TaskRun whose secret exists before the commit runs through it; a commit
  that changes a value upgrades the release (the Deployment's arguments change and roll out);
  removing the Kustomizations uninstalls everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import images
from tests.support import leaks
from tests.support.cluster import ROOT, Cluster, eventually
from tests.support.flux import (
    EXAMPLES,
    HELM_RELEASE,
    KUSTOMIZATION,
    GitOps,
    condition,
    dump,
    example,
    running_gitops,
    with_source,
)
from tests.support.operator import running_operator

pytestmark = pytest.mark.local_plane  # Flux runs as local processes; the operator image is imported

SESAME = str(Path(sys.executable).parent / "sesame")
# What gitops/flux/taskruns/train.yaml names (hand-written here: the test's independent copy).
NAMESPACE = "my-project-development"
TRAIN = "train"
TRAIN_FILE = "taskruns/train.yaml"
RELEASE_FILE = "sesame/release.yaml"
# The CRD's answer to a changed spec, as a user sees it in the Kustomization's Ready message.
IMMUTABLE = (
    "spec is immutable after creation: a TaskRun is one run. To run a changed spec, give it a new name, "
    "or delete it and create it again (kubectl replace --force -f FILE; from git: annotate the TaskRun "
    "kustomize.toolkit.fluxcd.io/force: enabled for Flux, or argocd.argoproj.io/sync-options: "
    "Force=true,Replace=true for Argo CD)"
)


@pytest.fixture(scope="module")
def gitops(cluster: Cluster, scratch: Path) -> Iterator[GitOps]:
    """One Flux for this module's stories (started in ~3 s, stopped after its objects are gone)."""
    state = cluster.plane.state_dir if cluster.plane else scratch  # goes with the session's cluster
    with running_gitops(cluster, state / f"gitops-{uuid.uuid4().hex[:6]}") as running:
        running.apply(with_source(example("source.yaml"), "platform", running.platform.url))
        yield running


# --- helpers -------------------------------------------------------------------------------------


def taskrun(cluster: Cluster, name: str) -> dict[str, Any] | None:
    try:
        return cluster.taskrun(NAMESPACE, name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((taskrun(cluster, name) or {}).get("status") or {})


def create_secret(cluster: Cluster, key: str, value: str) -> None:
    """`sesame create secret` for the example's project and domain, the value on stdin."""
    result = subprocess.run(
        [SESAME, "create", "secret", "--project", "my_project", "--domain", "development", key],
        input=value,
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def task_log(gitops: GitOps, name: str) -> str:
    log = gitops.kubectl("logs", "-n", NAMESPACE, name)
    leaks.record(f"kubectl logs {NAMESPACE}/{name}", log)
    return log


def succeeded_once(cluster: Cluster, name: str) -> dict[str, Any]:
    """The TaskRun Succeeded with exactly one pod, the one it made (its uid in the status)."""
    found = eventually(
        lambda: taskrun(cluster, name) if status(cluster, name).get("phase") == "Succeeded" else None,
        timeout=90,
        what=f"TaskRun {name} Succeeded",
    )
    pods = cluster.core.list_namespaced_pod(NAMESPACE, label_selector=f"sesame.dev/taskrun={name}").items
    assert [(p.metadata.name, p.metadata.uid) for p in pods] == [(name, found["status"]["podUID"])]
    return found


def small_task(
    name: str, code: str, secrets: list[dict[str, str]] | None = None, env: list[dict[str, str]] | None = None
) -> str:
    """A TaskRun manifest that runs `code` in the task image."""
    container: dict[str, Any] = {
        "name": "main",
        "image": images.TASK_IMAGE,
        "command": ["python3", "-c", code],
    }
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"template": {"spec": {"containers": [container]}}}
    if secrets:
        spec["secrets"] = secrets
    metadata = {"name": name, "namespace": NAMESPACE}
    return dump(
        [{"apiVersion": "sesame.dev/v1alpha1", "kind": "TaskRun", "metadata": metadata, "spec": spec}]
    )


def set_force(gitops: GitOps, force: bool) -> None:
    """`spec.force` of the taskruns Kustomization, as a user edits it."""
    patch = json.dumps({"spec": {"force": force}})
    gitops.kubectl("patch", KUSTOMIZATION, "taskruns", "-n", "flux-system", "--type=merge", "-p", patch)


def flux_ready_means_succeeded(
    gitops: GitOps, name: str, revision: str, taskruns: list[str], wrong: tuple[str, ...] = ("Failed",)
) -> None:
    """Kustomization `name` turns Ready at `revision`, and by then every TaskRun has Succeeded."""
    gitops.wait_for(name, revision, "Ready", wrong=wrong)
    phases = {run: status(gitops.cluster, run).get("phase") for run in taskruns}
    assert set(phases.values()) == {"Succeeded"}, f"Flux said Ready while the TaskRuns were {phases}"


# --- story 1: TaskRuns from git ----------------------------------------------------------------------


def test_taskruns_from_git_run_and_flux_reports_their_health(gitops: GitOps, canary: str) -> None:
    cluster = gitops.cluster
    gitops.apply(example("taskruns.yaml"))
    try:
        # A commit adds the example (its namespace and TaskRun) before any operator runs.
        revision = gitops.commit("a TaskRun", {TRAIN_FILE: EXAMPLES / TRAIN_FILE})
        eventually(lambda: taskrun(cluster, TRAIN), timeout=60, what="Flux to apply the TaskRun")
        # Not seen by an operator yet: Flux must wait, not call it Ready.
        gitops.wait_for("taskruns", revision, "Progressing", wrong=("Ready", "Failed"))
        assert status(cluster, TRAIN).get("phase") is None

        with running_operator([NAMESPACE]):
            # The operator waits for my_secret: Flux keeps waiting too (neither Ready nor failed)
            # for a whole health-check interval (Flux polls every 5 s).
            eventually(
                lambda: status(cluster, TRAIN).get("reason") == "SecretNotFound",
                what="the TaskRun to wait for its secret",
            )
            held = status(cluster, TRAIN)
            assert held["phase"] == "Pending", held
            assert condition({"status": held}, "Reconciling")["status"] == "True", held
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                assert gitops.verdict("taskruns", revision) == "Progressing"
                assert status(cluster, TRAIN).get("reason") == "SecretNotFound"
                time.sleep(0.5)

            # The secret, made with the CLI after the commit: the task runs; Flux turns Ready.
            create_secret(cluster, "my_secret", canary)
            flux_ready_means_succeeded(gitops, "taskruns", revision, [TRAIN])
            first = succeeded_once(cluster, TRAIN)
            assert task_log(gitops, TRAIN) == f"training with my_secret: {len(canary)} characters\n"

            never_met_and_failed_runs_fail_the_kustomization(gitops)
            an_edited_taskrun_is_refused_until_forced(gitops)

            # The example's own force annotation: an edit replaces it without touching Flux's settings.
            edited = (EXAMPLES / TRAIN_FILE).read_text().replace("training with", "retraining with")
            revision = gitops.commit("retrain", {TRAIN_FILE: edited})
            flux_ready_means_succeeded(gitops, "taskruns", revision, [TRAIN, "nightly"])
            again = succeeded_once(cluster, TRAIN)
            assert again["metadata"]["uid"] != first["metadata"]["uid"]
            assert again["status"]["podUID"] != first["status"]["podUID"]
            assert task_log(gitops, TRAIN) == f"retraining with my_secret: {len(canary)} characters\n"

            # TaskRuns removed from git are pruned, and their pods with them (the namespace stays).
            namespace_only = dump([doc for doc in example(TRAIN_FILE) if doc["kind"] == "Namespace"])
            revision = gitops.commit("done", {TRAIN_FILE: namespace_only, "taskruns/nightly.yaml": None})
            gitops.wait_for("taskruns", revision, "Ready", wrong=("Failed",))
            pods = [again["status"]["podName"], "nightly"]
            eventually(
                lambda: all(cluster.pod(NAMESPACE, pod) is None for pod in pods),
                timeout=60,
                what="the pruned TaskRuns' pods to go",
            )
            assert taskrun(cluster, TRAIN) is None
            assert taskrun(cluster, "nightly") is None
            assert cluster.core.read_namespace(NAMESPACE).status.phase == "Active"
    finally:
        leaks.collect(cluster.api, NAMESPACE)
        # Deleting the Kustomization prunes what it applied: the namespace and anything left in it.
        gitops.kubectl("delete", KUSTOMIZATION, "taskruns", "-n", "flux-system", "--wait", "--timeout=120s")
    eventually(
        lambda: NAMESPACE not in {n.metadata.name for n in cluster.core.list_namespace().items},
        timeout=120,
        what=f"namespace {NAMESPACE} pruned",
    )


def never_met_and_failed_runs_fail_the_kustomization(gitops: GitOps) -> None:
    """A run that can never start as written, then a task that fails: Flux fails at once."""
    cluster = gitops.cluster
    clash = small_task(
        "clash",
        "pass",
        secrets=[{"key": "my_secret", "envVar": "TOKEN"}],
        env=[{"name": "TOKEN", "value": "set by the template"}],
    )
    revision = gitops.commit("a clash", {"taskruns/clash.yaml": clash})
    failed = gitops.wait_for("taskruns", revision, "Failed", wrong=("Ready",))
    assert failed.startswith("Failed: HealthCheckFailed: health check failed after "), failed
    assert failed.endswith(
        "failed early due to stalled resources: [TaskRun/my-project-development/clash status: 'Failed']"
    ), failed
    assert (status(cluster, "clash")["phase"], status(cluster, "clash")["reason"]) == (
        "Failed",
        "EnvVarClash",
    )
    assert cluster.pod(NAMESPACE, "clash") is None

    crash = small_task("crash", "raise SystemExit(3)")
    revision = gitops.commit("a crash", {"taskruns/clash.yaml": None, "taskruns/crash.yaml": crash})
    failed = gitops.wait_for("taskruns", revision, "Failed", wrong=("Ready",))
    assert failed.endswith(
        "failed early due to stalled resources: [TaskRun/my-project-development/crash status: 'Failed']"
    ), failed
    assert status(cluster, "crash")["phase"] == "Failed"
    assert taskrun(cluster, "clash") is None  # pruned in the same commit


def an_edited_taskrun_is_refused_until_forced(gitops: GitOps) -> None:
    """Without force: the Kustomization stops with the CRD's message and the run is untouched.
    With `force: true` on the Kustomization: Flux deletes it and creates it again, and it runs."""
    cluster = gitops.cluster
    nightly = small_task("nightly", "print('nightly 1')")
    revision = gitops.commit("nightly", {"taskruns/crash.yaml": None, "taskruns/nightly.yaml": nightly})
    flux_ready_means_succeeded(gitops, "taskruns", revision, [TRAIN, "nightly"])
    before = succeeded_once(cluster, "nightly")

    edited = small_task("nightly", "print('nightly 2')")
    revision = gitops.commit("nightly, edited", {"taskruns/nightly.yaml": edited})
    refused = gitops.wait_for("taskruns", revision, "Failed", wrong=("Ready",))
    assert refused.startswith(
        "Failed: ReconciliationFailed: TaskRun/my-project-development/nightly dry-run failed (Invalid): "
        'TaskRun.sesame.dev "nightly" is invalid: spec: Invalid value: "object": '
    ), refused
    assert refused.endswith(IMMUTABLE), refused
    assert taskrun(cluster, "nightly")["metadata"]["uid"] == before["metadata"]["uid"]

    set_force(gitops, True)
    try:  # (the refusal above is still there until Flux has read the change: no fail-fast)
        flux_ready_means_succeeded(gitops, "taskruns", revision, [TRAIN, "nightly"], wrong=())
        after = succeeded_once(cluster, "nightly")
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
        assert cluster.pod(NAMESPACE, "nightly")["metadata"]["uid"] == after["status"]["podUID"]
        assert task_log(gitops, "nightly") == "nightly 2\n"
    finally:
        set_force(gitops, False)


# --- story 2: Sesame installed by a HelmRelease -------------------------------------------------------


def test_a_helmrelease_from_git_installs_and_upgrades_sesame(
    gitops: GitOps, cluster: Cluster, canary: str
) -> None:
    images.load_into_node(
        cluster.kubeconfig.parent, images.build(images.operator_recipe()), images.OPERATOR_IMAGE
    )
    chart_repository = gitops.git.repository("sesame")
    chart_repository.commit("the chart", {"charts/sesame": ROOT / "charts" / "sesame"})
    apps = client.AppsV1Api(cluster.api)

    def release(log_level: str) -> str:
        """sesame/release.yaml as written (logLevel: info), the chart from the test's repository."""
        documents = with_source(example(RELEASE_FILE), "sesame", chart_repository.url)
        [helm_release] = [d for d in documents if d["kind"] == "HelmRelease"]
        assert helm_release["spec"]["values"] == {"logLevel": "info"}
        helm_release["spec"]["values"]["logLevel"] = log_level
        return dump(documents)

    def operator() -> client.V1Deployment:
        return apps.read_namespaced_deployment("sesame", "sesame-system")

    def history() -> list[int]:
        helm_release = gitops.get(HELM_RELEASE, "sesame-system", "sesame")
        assert condition(helm_release, "Ready")["status"] == "True", helm_release
        return [entry["version"] for entry in (helm_release or {})["status"]["history"]]

    gitops.apply(example("sesame.yaml"))
    try:
        revision = gitops.commit("install Sesame", {RELEASE_FILE: release("info")})
        gitops.wait_for("sesame", revision, "Ready", wrong=("Failed",), timeout=240)
        assert history() == [1]
        assert "--log-level=info" in operator().spec.template.spec.containers[0].args
        assert operator().status.available_replicas == 1

        # A TaskRun through Flux, run by the operator Flux installed; its secret is stored first.
        cluster.create_namespace(NAMESPACE)
        create_secret(cluster, "my_secret", canary)
        gitops.apply(example("taskruns.yaml"))
        revision = gitops.commit("a TaskRun", {TRAIN_FILE: EXAMPLES / TRAIN_FILE})
        flux_ready_means_succeeded(gitops, "taskruns", revision, [TRAIN])
        succeeded_once(cluster, TRAIN)
        assert task_log(gitops, TRAIN) == f"training with my_secret: {len(canary)} characters\n"

        # A commit that changes a value upgrades the release, and the operator rolls out with it.
        revision = gitops.commit("debug logs", {RELEASE_FILE: release("debug")})
        gitops.wait_for("sesame", revision, "Ready", wrong=("Failed",), timeout=240)
        assert history() == [2, 1]
        assert "--log-level=debug" in operator().spec.template.spec.containers[0].args
        rollout = gitops.kubectl(
            "rollout", "status", "deployment/sesame", "-n", "sesame-system", "--timeout=120s"
        )
        assert "successfully rolled out" in rollout
    finally:
        leaks.collect(cluster.api, NAMESPACE)
        leaks.collect(cluster.api, "sesame-system")
        for name in ("taskruns", "sesame"):  # TaskRuns first: the operator must outlive them
            gitops.kubectl(
                "delete",
                KUSTOMIZATION,
                name,
                "-n",
                "flux-system",
                "--ignore-not-found",
                "--wait",
                "--timeout=180s",
            )
    # Flux uninstalled the release: nothing of it is left but the CRD (which stays, as documented).
    eventually(
        lambda: (
            not gitops.kubectl(
                "get",
                "clusterroles,mutatingwebhookconfigurations",
                "-l",
                "app.kubernetes.io/instance=sesame",
                "-o",
                "name",
            )
        ),
        timeout=120,
        what="the release's cluster-wide objects gone",
    )
    eventually(
        lambda: (
            not {"sesame-system", NAMESPACE} & {n.metadata.name for n in cluster.core.list_namespace().items}
        ),
        timeout=120,
        what="the namespaces pruned",
    )
