"""The control plane the tests talk to, plus small helpers that use the real API server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config import kube_config

import images
import localcluster
from localcluster import LocalControlPlane, build_binaries
from sesame import naming
from tests.support import host, leaks

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "taskrun.yaml"
T = TypeVar("T")
# Sesame's task image (Debian's Python + the SDK), imported into the local node by tools/images.py.
TASK_IMAGE = images.TASK_IMAGE
# For pods that must exist but never run (the controller's mechanics at volume): no scheduler
# serves this name, so the node never sees them.
UNSCHEDULED: dict[str, str] = {"schedulerName": "sesame-tests-no-scheduler"}


class HostChanged(AssertionError):
    """The local cluster changed the host it shares (a kernel setting, the network, a mount, …)."""


@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    api: client.ApiClient
    plane: LocalControlPlane | None  # None when reusing a cluster someone else started

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A namespace whose `default` ServiceAccount exists, so pods can be created in it at once."""
        self.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        eventually(
            lambda: self._has_service_account(name), timeout=30, what=f"ServiceAccount default in {name}"
        )

    def _has_service_account(self, namespace: str) -> bool:
        try:
            self.core.read_namespaced_service_account("default", namespace)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def delete_namespace(self, name: str) -> None:
        """Deleted once the leak canary has looked at what it holds."""
        leaks.collect(self.api, name)
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(name)

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, the CLI, a separate operator process)."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}:{os.environ['PATH']}",
        }

    def sesame(self, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """The CLI as users run it, in its own process (the leak canary records what it prints)."""
        return subprocess.run(
            [sys.executable, "-m", "sesame", *argv],
            env=self.env(),
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def kubectl(self) -> str:
        return str(self.bin_dir / "kubectl")

    def helm(self) -> str:
        return str(self.bin_dir / "helm")

    def create_secret(self, namespace: str, name: str, data: dict[str, str], **meta: Any) -> None:
        self.core.create_namespaced_secret(
            namespace, {"metadata": {"name": name, **meta}, "stringData": data}
        )

    def store_secret(self, namespace: str, key: str, value: str) -> None:
        """A secret as `sesame create secret` stores it (DESIGN §1), written directly."""
        self.create_secret(
            namespace,
            naming.secret_object_name(key),
            {key: value},
            labels={naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE},
            annotations={naming.KEY_ANNOTATION: key},
        )

    def create_taskrun(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "sesame.dev/v1alpha1",
            "kind": "TaskRun",
            "metadata": {"name": name},
            "spec": spec,
        }
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            "sesame.dev", "v1alpha1", namespace, "taskruns", body
        )
        return result

    def taskrun(self, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "sesame.dev", "v1alpha1", namespace, "taskruns", name
        )
        return result

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(self.core.read_namespaced_pod, namespace, name)

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(self.core.read_namespaced_config_map, namespace, name)

    def _read_or_none(
        self, read: Callable[[str, str], Any], namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object as plain JSON, or None when it does not exist."""
        try:
            found = read(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        result: dict[str, Any] = self.api.sanitize_for_serialization(found)
        return result


def eventually(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or check}; last value: {last!r}")


def install_crds(api: client.ApiClient) -> None:
    localcluster.install_crds(api, CRD)


POLICY_RELEASE = "sesame-session"  # Helm releases of the tests use other names


def install_admission_policies(bin_dir: Path, kubeconfig: Path) -> None:
    """The chart's ValidatingAdmissionPolicies, on in every install by default, so on here too."""
    rendered = subprocess.run(
        [
            str(bin_dir / "helm"),
            "template",
            POLICY_RELEASE,
            str(ROOT / "charts" / "sesame"),
            "--kube-version",
            "1.34.4",
            "--set",
            "networkPolicy.enabled=false",
            "--show-only",
            "templates/admission-policies.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subprocess.run(
        [str(bin_dir / "kubectl"), "apply", "--server-side", "-f", "-"],
        input=rendered,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )


@contextlib.contextmanager
def start_cluster() -> Iterator[Cluster]:
    """The session's cluster. One the session starts itself must leave the host as it found it:
    any change to a kernel setting, the network, mounts, cgroups or processes fails the run."""
    bin_dir = build_binaries()
    reuse = os.environ.get("SESAME_KUBECONFIG")
    plane: LocalControlPlane | None = None
    state: tempfile.TemporaryDirectory[str] | None = None
    before: host.HostState | None = None
    ours: host.Ours | None = None
    if reuse:
        kubeconfig = Path(reuse).resolve()
    else:
        before = host.capture()
        state = tempfile.TemporaryDirectory(prefix="sesame-cluster-")
        plane = LocalControlPlane(state_dir=Path(state.name), bin_dir=bin_dir)
        plane.start()  # raises ControlPlaneError naming the component and its log tail
        kubeconfig = plane.kubeconfig
        ours = host.Ours(
            state_dir=state.name,
            cgroup_root=plane.node_config.cgroup_root if plane.node_config else None,
            pid_namespace=plane.node_pid_namespace(),
        )
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)  # Kopf (KopfRunner) and the CLI read it
    # The client library computed its default path at import time; Kopf's login uses that default.
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        install_crds(api)
        install_admission_policies(bin_dir, kubeconfig)
        yield Cluster(kubeconfig=kubeconfig, bin_dir=bin_dir, api=api, plane=plane)
    finally:
        api.close()
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if plane is not None:
            plane.stop()
        if state is not None:
            state.cleanup()
        if before is not None and ours is not None:
            changed = host.changes(before, host.capture(), ours)
            if changed:
                raise HostChanged("the local cluster changed the host:\n" + "\n".join(changed))


def manifest(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
