"""`make bench`'s Helm part: the chart as shipped, running the operator image on the local node.

- image: size of the OCI archive, build time (warm: the cache is hit when nothing changed) and the
  time to import it into the node;
- `helm install` → operator Ready (`kubectl rollout status`), default values, `ROUNDS` times;
- leader failover with `replicas: 2` (webhook off: without cert-manager the chart refuses two
  replicas serving it): the leader's pod is deleted; measured are the time until it has exited
  (Kopf's graceful stop, which takes it out of the peering) and from then until a TaskRun created
  at that moment has its pod, made by the former standby; `ROUNDS` times.

Needs the project's own local cluster (the image is imported into its node); elsewhere the part
is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench.stats import summary
from bench.target import ROOT, Target, build_binaries

CHART = ROOT / "charts" / "sesame"
ROUNDS = 3
TIMEOUT = 180.0


def missing(target: Target) -> str:
    """Why this part cannot run on `target`, or ''."""
    state = target.kubeconfig.parent
    if not (state / "pids.json").exists() or not (state / "node" / "node.json").exists():
        return "needs the project's local cluster with its node (the image is imported into the node)"
    return ""


def measure(target: Target, log: Callable[[str], None]) -> dict[str, Any]:
    import images  # tools/images.py: tools/ is on sys.path once bench.target is imported

    state = target.kubeconfig.parent
    bin_dir = build_binaries()
    started = time.monotonic()
    archive = images.build(images.operator_recipe())
    built = time.monotonic() - started
    imported = images.load_into_node(state, archive, images.OPERATOR_IMAGE)
    size = archive.stat().st_size / 2**20
    log(f"helm: image {size:.1f} MiB, built or found in {built:.1f}s, imported in {imported:.1f}s")
    chart = Chart(target, bin_dir, images.TASK_IMAGE)
    api = target.api(pool=4)
    try:
        installs = [chart.install_to_ready(f"sesame-bench-{uuid.uuid4().hex[:6]}") for _ in range(ROUNDS)]
        log(f"helm: install → Ready {', '.join(f'{s:.1f}' for s in installs)} s")
        failovers = chart.failovers(api, ROUNDS)
        log(
            "helm: leader pod deleted → exited + standby acting: "
            + ", ".join(f"{exited:.1f} + {acting:.1f}" for exited, acting in failovers)
            + " s"
        )
    finally:
        api.close()
    return {
        "image_mib": round(size, 1),
        "image_build_s": round(built, 1),
        "image_import_s": round(imported, 1),
        "install_to_ready_s": summary(installs),
        "failover_leader_exit_s": summary([exited for exited, _ in failovers]),
        "failover_standby_acting_s": summary([acting for _, acting in failovers]),
    }


class Chart:
    """helm and kubectl against the target, each release in a namespace of its own."""

    def __init__(self, target: Target, bin_dir: Path, task_image: str) -> None:
        self.target = target
        self.bin_dir = bin_dir
        self.task_image = task_image

    def run(self, tool: str, *args: str) -> str:
        result = subprocess.run(
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            env=self.target.env(),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args[:3])} failed: {result.stderr.strip()[-500:]}")
        return result.stdout

    def install(self, release: str, *values: str) -> float:
        started = time.monotonic()
        self.run("helm", "install", release, str(CHART), "-n", release, "--create-namespace", *values)
        self.rollout(release)
        return time.monotonic() - started

    def rollout(self, release: str) -> None:
        self.run(
            "kubectl",
            "rollout",
            "status",
            f"deployment/{release}",
            "-n",
            release,
            f"--timeout={TIMEOUT:.0f}s",
        )

    def uninstall(self, release: str) -> None:
        self.run("helm", "uninstall", release, "-n", release, "--wait")
        self.run("kubectl", "delete", "namespace", release, "--wait=false")

    def install_to_ready(self, release: str) -> float:
        try:
            return self.install(release)
        finally:
            self.uninstall(release)

    def failovers(self, api: client.ApiClient, rounds: int) -> list[tuple[float, float]]:
        """(leader's pod deleted → it has exited, → the standby has created a new TaskRun's pod)."""
        release = f"sesame-bench-{uuid.uuid4().hex[:6]}"
        watched = f"{release}-tasks"
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": watched}})
        try:
            values = ["replicas=2", "webhook.enabled=false", f"watchNamespaces={{{watched}}}"]
            self.install(release, *(arg for value in values for arg in ("--set", value)))
            times = []
            for index in range(rounds):
                leader = wait_for(lambda: peering_leader(custom, watched, release), "two live replicas")
                deleted = time.monotonic()
                core.delete_namespaced_pod(leader, release)
                # Only once the leader has exited can no TaskRun be handled by it any more.
                wait_for(partial(pod_gone, core, release, leader), "the leader to exit")
                exited = time.monotonic() - deleted
                body = taskrun(f"after-{index}", self.task_image)
                times.append((exited, first_pod_after(custom, watched, body, deleted) - exited))
                self.rollout(release)  # the replacement is a standby again before the next round
            return times
        finally:
            self.uninstall(release)
            core.delete_namespace(watched)


def first_pod_after(
    custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any], since: float
) -> float:
    """Seconds from `since` until the TaskRun `body`, created now, has its pod."""
    name = body["metadata"]["name"]
    custom.create_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns", body)
    wait_for(lambda: pod_name(custom, namespace, name), f"TaskRun {name}'s pod")
    return time.monotonic() - since


def taskrun(name: str, image: str) -> dict[str, Any]:
    container = {"name": "main", "image": image, "command": ["python3", "-c", "pass"]}
    return {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "TaskRun",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def peering_leader(custom: client.CustomObjectsApi, namespace: str, name: str) -> str:
    """The live replica with the highest priority once both replicas keep the peering alive."""
    try:
        peering = custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
    except ApiException:
        return ""
    live = {peer: info for peer, info in (peering.get("status") or {}).items() if info.get("lifetime")}
    return max(live, key=lambda peer: live[peer]["priority"]) if len(live) == 2 else ""


def pod_gone(core: client.CoreV1Api, namespace: str, name: str) -> str:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return "gone"
        raise
    return ""


def pod_name(custom: client.CustomObjectsApi, namespace: str, name: str) -> str:
    found = custom.get_namespaced_custom_object("sesame.dev", "v1alpha1", namespace, "taskruns", name)
    return str((found.get("status") or {}).get("podName") or "")


def wait_for(check: Callable[[], str], what: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"helm part: timed out waiting for {what}")
