"""Faults and high availability: the operator killed, the API server and etcd restarted, two replicas.

The operator runs as a separate process (`python -m sesame operator run`), as in production, so it
can be killed with SIGKILL. Every test counts TaskRuns that ended without their pod or with a wrong
status (lost) and pods beyond one per TaskRun (duplicated), and prints them with its timings
(`pytest -s` shows them); timings are reported, never asserted. The pods here need only exist (the
controller's mechanics at volume): no scheduler places them, so the node never runs them.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.bulk import pod_count, pods_of, taskruns_of
from tests.support.cluster import ROOT, TASK_IMAGE, UNSCHEDULED, Cluster, eventually
from tests.support.processes import OperatorProcess, operator_process, retrying

KEYS = [f"key_{i}" for i in range(10)]
MAIN = {"name": "main", "image": TASK_IMAGE, "command": ["python3", "-c", "print('hi')"]}
TEMPLATE = {"spec": {"containers": [MAIN], **UNSCHEDULED}}
PEERING_CRDS = ROOT / "crds" / "kopf-peering.yaml"


def report(what: str, **figures: Any) -> None:
    shown = ", ".join(f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\n[reliability] {what}: {shown}")


def store_keys(cluster: Cluster, namespace: str, value: str) -> None:
    for key in KEYS:
        cluster.store_secret(namespace, key, value)


def plan(count: int, seed: int, prefix: str = "run") -> dict[str, list[dict[str, Any]]]:
    """`count` TaskRuns, each requesting 1–3 of the stored keys, some as files."""
    rng = random.Random(seed)
    runs = {}
    for index in range(count):
        keys = rng.sample(KEYS, rng.randint(1, 3))
        runs[f"{prefix}-{index:03d}"] = [
            {"key": k, **({"mountRequirement": "FILE"} if rng.random() < 0.3 else {})} for k in keys
        ]
    return runs


class Burst:
    """Creates TaskRuns from a thread, retrying through API server and etcd outages."""

    def __init__(self, cluster: Cluster, namespace: str, runs: dict[str, list[dict[str, Any]]]) -> None:
        self.cluster, self.namespace, self.runs = cluster, namespace, runs
        self.created = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for name, secrets in self.runs.items():
                retrying(
                    self.cluster.create_taskrun,
                    self.namespace,
                    name,
                    {"secrets": secrets, "template": TEMPLATE},
                )
                self.created += 1
        except BaseException as error:
            self.error = error

    def __enter__(self) -> Burst:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(timeout=180)
        assert not self.thread.is_alive(), "the burst of TaskRun creations did not finish"
        assert self.error is None, f"creating TaskRuns failed: {self.error!r}"


def condition(status: dict[str, Any], type_: str) -> str | None:
    return next((c["status"] for c in status.get("conditions") or [] if c["type"] == type_), None)


def wanted_refs(secrets: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        ("file" if s.get("mountRequirement") == "FILE" else "env", s["key"].replace("_", "-"), s["key"])
        for s in secrets
    }


def refs_in(pod: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(delivery, Secret name, data key) of every secret reference in the pod spec."""
    found = set()
    for container in pod["spec"]["containers"]:
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                found.add(("env", ref["name"], ref["key"]))
    for volume in pod["spec"].get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            secret = source.get("secret")
            if secret:
                found |= {("file", secret["name"], item["key"]) for item in secret["items"]}
    return found


def tally(
    cluster: Cluster, namespace: str, runs: dict[str, list[dict[str, Any]]]
) -> tuple[list[str], list[str]]:
    """(lost, duplicated): TaskRuns without exactly their pod and a correct status; extra pods."""
    taskruns = {t["metadata"]["name"]: t for t in taskruns_of(cluster.api, namespace)}
    pods = pods_of(cluster.api, namespace)
    per_taskrun: dict[str, list[dict[str, Any]]] = {}
    duplicated = []
    for pod in pods:
        owners = [r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")]
        label = (pod["metadata"].get("labels") or {}).get("sesame.dev/taskrun")
        if len(owners) != 1 or owners[0]["name"] != label or pod["metadata"]["name"] != label:
            duplicated.append(pod["metadata"]["name"])
            continue
        per_taskrun.setdefault(label, []).append(pod)
    lost = []
    for name, secrets in runs.items():
        taskrun = taskruns.get(name)
        mine = per_taskrun.get(name, [])
        duplicated += [p["metadata"]["name"] for p in mine[1:]]
        status = (taskrun or {}).get("status") or {}
        ok = (
            taskrun is not None
            and len(mine) == 1
            and mine[0]["metadata"]["ownerReferences"][0]["uid"] == taskrun["metadata"]["uid"]
            and status.get("podName") == name
            and condition(status, "SecretsReady") == "True"
            and condition(status, "PodCreated") == "True"
            and {s["key"] for s in status.get("secrets") or []} == {s["key"] for s in secrets}
            and refs_in(mine[0]) == wanted_refs(secrets)
        )
        if not ok:
            lost.append(name)
    return lost, duplicated


def every_run_done(
    cluster: Cluster, namespace: str, runs: dict[str, Any], timeout: float, what: str = "every TaskRun done"
) -> None:
    """Until each of `runs` has its pod and its status says so; on timeout, names those that do not."""

    def pending() -> dict[str, str]:
        found = {t["metadata"]["name"]: t.get("status") or {} for t in taskruns_of(cluster.api, namespace)}
        return {
            name: f"{status.get('phase')}/{status.get('reason')}"
            for name in runs
            if (status := found.get(name, {})).get("podName") != name
            or condition(status, "PodCreated") != "True"
        }

    left = retrying(pending)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = retrying(pending)
    assert not left, f"timed out after {timeout:.0f}s waiting for {what}; not done: {left}"


def wait_for_pods(cluster: Cluster, namespace: str, at_least: int, timeout: float) -> float:
    """Seconds until the namespace holds at least `at_least` pods."""
    start = time.monotonic()
    eventually(
        lambda: pod_count(cluster.api, namespace) >= at_least,
        timeout=timeout,
        interval=0.1,
        what=f"{at_least} pods",
    )
    return time.monotonic() - start


def first_pod_of(cluster: Cluster, namespace: str, runs: dict[str, Any], since: float) -> float | None:
    """Seconds from `since` until a pod of one of `runs` exists (None while there is none)."""
    names = {p["metadata"]["name"] for p in pods_of(cluster.api, namespace)}
    return time.monotonic() - since if names & runs.keys() else None


def tracebacks(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("Traceback")]


# --- 1. the operator killed mid-burst ------------------------------------------------------------


def test_kill_9_mid_burst_loses_and_doubles_nothing(
    cluster: Cluster, namespace: str, canary: str, tmp_path: Path
) -> None:
    store_keys(cluster, namespace, canary)
    runs = plan(300, seed=1)
    started = time.monotonic()
    with operator_process(cluster, [namespace], tmp_path / "operator.log") as operator:
        with Burst(cluster, namespace, runs):
            wait_for_pods(cluster, namespace, len(runs) // 3, timeout=120)
            operator.kill()
            at_kill = pod_count(cluster.api, namespace)
            killed_at = time.monotonic()
            operator.start()
        # every TaskRun exists now; the restarted operator must finish the job
        every_run_done(cluster, namespace, runs, timeout=180, what="every TaskRun done")
    recovered = time.monotonic() - killed_at
    lost, duplicated = tally(cluster, namespace, runs)
    report(
        "kill -9 mid-burst",
        taskruns=len(runs),
        pods_at_kill=at_kill,
        lost=len(lost),
        duplicated=len(duplicated),
        restart_to_all_done=recovered,
        total=time.monotonic() - started,
    )
    assert (lost, duplicated) == ([], [])
    assert not tracebacks(operator.output())


# --- 2. the API server and etcd restarted mid-burst ----------------------------------------------


@pytest.mark.local_plane
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_operator_recovers_from_a_restart_by_itself(
    cluster: Cluster, namespace: str, tmp_path: Path, component: str
) -> None:
    if cluster.plane is None:
        pytest.fail(
            f"restarting {component} needs the suite's own control plane; SESAME_KUBECONFIG points at a "
            "cluster this suite cannot restart (run without it, or deselect with -m 'not local_plane')"
        )
    store_keys(cluster, namespace, "value")
    during = plan(90, seed=2)
    # created only once the restart is over: their pods prove the watches came back (a burst that
    # finished before the restart would prove nothing, and the operator is fast enough for that)
    after = plan(30, seed=3, prefix="after")
    runs = {**during, **after}
    with operator_process(cluster, [namespace], tmp_path / "operator.log") as operator:
        with Burst(cluster, namespace, during):
            wait_for_pods(cluster, namespace, 30, timeout=120)
            before = time.monotonic()
            cluster.plane.restart_component(component)
            restarted = time.monotonic()
            at_restart = retrying(pod_count, cluster.api, namespace)
        with Burst(cluster, namespace, after):
            first = eventually(
                lambda: first_pod_of(cluster, namespace, after, since=restarted),
                timeout=120,
                interval=0.1,
                what="a pod for a TaskRun created after the restart",
            )
        every_run_done(cluster, namespace, runs, timeout=180, what="every TaskRun done")
        everything = time.monotonic() - restarted
        assert operator.alive(), f"the operator exited:\n{operator.tail()}"
    lost, duplicated = tally(cluster, namespace, runs)
    report(
        f"{component} restart mid-burst",
        taskruns=len(runs),
        pods_at_restart=at_restart,
        restart_took=restarted - before,
        to_first_new_pod=first,
        to_all_pods=everything,
        lost=len(lost),
        duplicated=len(duplicated),
    )
    assert (lost, duplicated) == ([], [])


def test_transient_pod_creation_failures_are_retried_to_the_end(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """A broken admission webhook (someone else's) makes pod creation fail with HTTP 500 for a while.

    No watch-event arrives when it heals, so only the operator's own retries can finish the job —
    including the status and the event, written from the retry thread.
    """
    store_keys(cluster, namespace, "value")
    admission = client.AdmissionregistrationV1Api(cluster.api)
    webhook = {
        "metadata": {"name": f"broken-{namespace}"},
        "webhooks": [
            {
                "name": "broken.example.com",
                "clientConfig": {"url": "https://127.0.0.1:1/broken"},  # nothing listens there
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 1,
            }
        ],
    }
    admission.create_validating_webhook_configuration(webhook)
    runs = plan(20, seed=6)
    try:
        with operator_process(cluster, [namespace], tmp_path / "operator.log") as operator:
            with Burst(cluster, namespace, runs):
                pass
            # Every TaskRun's pod creation was tried and refused (the operator says so), and then:
            eventually(
                lambda: refused_every_one(operator.output(), namespace, runs),
                timeout=60,
                what="a refused pod creation for every TaskRun",
            )
            assert pod_count(cluster.api, namespace) == 0
            admission.delete_validating_webhook_configuration(f"broken-{namespace}")
            healed = time.monotonic()
            every_run_done(cluster, namespace, runs, timeout=90, what="every TaskRun done")
            everything = time.monotonic() - healed
            lost, duplicated = tally(cluster, namespace, runs)
            events = [
                e for e in cluster.core.list_namespaced_event(namespace).items if e.reason == "PodCreated"
            ]
            gave_up = [line for line in operator.output().splitlines() if "giving up" in line]
    finally:
        with contextlib.suppress(ApiException):
            admission.delete_validating_webhook_configuration(f"broken-{namespace}")
    report(
        "pod creation refused with HTTP 500 for a while",
        taskruns=len(runs),
        healed_to_all_pods=everything,
        lost=len(lost),
        duplicated=len(duplicated),
        pod_created_events=len(events),
        gave_up=len(gave_up),
    )
    assert (lost, duplicated) == ([], [])
    assert gave_up == []
    assert len(events) == len(runs)


def refused_every_one(log: str, namespace: str, runs: dict[str, Any]) -> bool:
    """Every TaskRun's pod creation failed with HTTP 500 and is being retried (the operator's log)."""
    return all(f"TaskRun {namespace}/{name}: HTTP 500; retrying in" in log for name in runs)


# --- 3. two replicas with Kopf peering; sharding by namespace ------------------------------------


def install_peering(cluster: Cluster) -> None:
    extensions = client.ApiextensionsV1Api(cluster.api)
    for document in yaml.safe_load_all(PEERING_CRDS.read_text()):
        if not document:
            continue
        retrying(extensions.create_custom_resource_definition, document)
        name = document["metadata"]["name"]
        eventually(
            lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(name).status.conditions or []
            ),
            what=f"CRD {name}",
        )


def peers(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    peering = cluster.custom.get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", "sesame"
    )
    result: dict[str, dict[str, Any]] = peering.get("status") or {}
    return result


@pytest.fixture
def replicas(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[dict[str, OperatorProcess]]:
    install_peering(cluster)
    cluster.custom.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "sesame"}},
    )
    with (
        operator_process(
            cluster, [namespace], tmp_path / "a.log", ["--peering", "sesame"], {"POD_ID": "replica-a"}
        ) as a,
        operator_process(
            cluster, [namespace], tmp_path / "b.log", ["--peering", "sesame"], {"POD_ID": "replica-b"}
        ) as b,
    ):
        yield {"replica-a": a, "replica-b": b}


HANDLED_A_TASKRUN = "Handler 'taskrun_event' is invoked"  # Kopf's debug line for each TaskRun event


def stream_state(process: OperatorProcess, resource: str) -> str:
    """ "paused" or "resumed": the last thing Kopf said about the watch-stream of `resource`."""
    log = process.output()
    paused = log.rfind(f"Pausing the watch-stream for {resource}")
    resumed = log.rfind(f"Resuming the watch-stream for {resource}")
    return "paused" if paused > resumed else "resumed"


def settled_standby(active: OperatorProcess, standby: OperatorProcess, resource: str) -> int:
    """Where the standby's log stands once its watch of `resource` is paused and the active one's
    runs (their logs say so).

    A replica that starts alone acts until it sees a peer with a higher priority; a replica that
    sees the other one first never starts (Kopf starts peered operators paused). Either way, no
    TaskRun created after this reaches the standby while the active one lives.
    """

    def settled() -> int | None:
        log = standby.output()
        paused = stream_state(standby, resource) == "paused" and stream_state(active, resource) == "resumed"
        return len(log) if paused else None

    return eventually(settled, timeout=30, what=f"{resource} paused in the standby only")


def test_one_replica_acts_and_the_other_takes_over_after_kill_9(
    cluster: Cluster, namespace: str, replicas: dict[str, OperatorProcess]
) -> None:
    store_keys(cluster, namespace, "value")
    known = eventually(
        lambda: len(peers(cluster, namespace)) == 2 and peers(cluster, namespace), what="2 peers"
    )
    priorities = {name: info["priority"] for name, info in known.items()}
    active_name = max(priorities, key=priorities.__getitem__)
    active = replicas[active_name]
    standby = next(p for n, p in replicas.items() if n != active_name)
    paused_at = settled_standby(active, standby, "taskruns.v1alpha1.sesame.dev")

    first = plan(40, seed=3, prefix="first")
    with Burst(cluster, namespace, first):
        pass
    every_run_done(cluster, namespace, first, timeout=90, what="the first batch")
    # The namespace held no TaskRun before these, created after the standby paused: it handles none
    # (the active one's log shows what handling them looks like).
    standby_acted = standby.output()[paused_at:].count(HANDLED_A_TASKRUN)
    assert HANDLED_A_TASKRUN in active.output()

    second = plan(80, seed=4, prefix="second")
    with Burst(cluster, namespace, second):
        wait_for_pods(cluster, namespace, len(first) + 15, timeout=90)
        active.kill()
        killed = time.monotonic()
        at_kill = pod_count(cluster.api, namespace)
        first_new = wait_for_pods(cluster, namespace, at_kill + 1, timeout=120)
    runs = {**first, **second}
    every_run_done(cluster, namespace, runs, timeout=120, what="every TaskRun done")
    everything = time.monotonic() - killed
    lost, duplicated = tally(cluster, namespace, runs)
    report(
        "peering takeover after kill -9",
        priorities=priorities,
        active=active_name,
        taskruns=len(runs),
        pods_at_kill=at_kill,
        takeover_to_first_pod=first_new,
        to_all_pods=everything,
        lost=len(lost),
        duplicated=len(duplicated),
    )
    assert standby_acted == 0, "the paused replica handled TaskRuns while the active one was alive"
    assert "Resuming operations after the pause" in standby.output()
    assert (lost, duplicated) == ([], [])


def test_disjoint_namespace_sets_never_touch_each_other(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    second, unserved = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    for extra in (second, unserved):
        cluster.create_namespace(extra)
    try:
        runs = {ns: plan(15, seed=5, prefix="shard") for ns in (namespace, second, unserved)}
        for ns in runs:
            store_keys(cluster, ns, "value")
        with (
            operator_process(cluster, [namespace], tmp_path / "one.log") as one,
            operator_process(cluster, [second], tmp_path / "two.log") as two,
        ):
            for ns in (unserved, namespace, second):  # the unserved ones first
                with Burst(cluster, ns, runs[ns]):
                    pass
            for ns in (namespace, second):
                every_run_done(cluster, ns, runs[ns], timeout=90, what=f"{ns} done")
            # A positive signal before the absence checks: one more TaskRun in each served
            # namespace, created after all the others and decided by its operator. A stray watch
            # of the unserved namespace would have delivered its (earlier) TaskRuns by then.
            last = {"last": [{"key": KEYS[0]}]}
            for ns in (namespace, second):
                with Burst(cluster, ns, last):
                    pass
                eventually(
                    lambda ns=ns: (cluster.taskrun(ns, "last").get("status") or {}).get("podName"),
                    timeout=60,
                    what=f"the last run in {ns} decided",
                )
        untouched = [
            t for t in taskruns_of(cluster.api, unserved) if (t.get("status") or {}).get("conditions")
        ]
        unserved_pods = pods_of(cluster.api, unserved)
        lost = {ns: tally(cluster, ns, runs[ns]) for ns in (namespace, second)}
        mentions = {
            "one": sorted({ns for ns in (second, unserved) if ns in one.output()}),
            "two": sorted({ns for ns in (namespace, unserved) if ns in two.output()}),
        }
        report(
            "sharding by namespace",
            served=2 * 15,
            unserved_with_status=len(untouched),
            unserved_pods=len(unserved_pods),
            foreign_mentions=sum(len(v) for v in mentions.values()),
        )
        assert all(result == ([], []) for result in lost.values()), lost
        assert untouched == []
        assert unserved_pods == []
        assert mentions == {"one": [], "two": []}
        assert re.search(rf"\b{namespace}\b", one.output())
    finally:
        for extra in (second, unserved):
            cluster.delete_namespace(extra)
