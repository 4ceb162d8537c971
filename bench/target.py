"""The cluster under test: a LocalControlPlane of our own in a temp dir, or the one a kubeconfig names."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "taskrun.yaml"
sys.path.insert(0, str(ROOT / "tools"))

from localcluster import LocalControlPlane, build_binaries, install_crds  # noqa: E402


@dataclass
class Target:
    kubeconfig: Path
    owned: bool  # True: our own control plane, nothing else runs on it
    pids: dict[str, int] = field(default_factory=dict)  # its processes, by component (owned only)
    node: bool = False  # the local node, with Sesame's task image, runs pods

    def api(self, pool: int = 32) -> client.ApiClient:
        """A client whose connection pool fits `pool` concurrent requests (the default is 10)."""
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = pool
        return client.ApiClient(configuration)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def external_kubeconfig() -> Path | None:
    """SESAME_KUBECONFIG (as the test suite uses it) or KUBECONFIG, when set."""
    for variable in ("SESAME_KUBECONFIG", "KUBECONFIG"):
        value = os.environ.get(variable)
        if value:
            return Path(value).resolve()
    return None


@contextlib.contextmanager
def open_target(log: Any = print) -> Iterator[Target]:
    """The cluster to measure, with the TaskRun CRD installed; a local one is stopped at the end."""
    external = external_kubeconfig()
    if external is not None:
        log(f"cluster: {external}")
        target = Target(kubeconfig=external, owned=False, node=_local_node(external))
        install_crd(target)
        yield target
        return
    bin_dir = build_binaries()
    with tempfile.TemporaryDirectory(prefix="sesame-bench-") as state:
        plane = LocalControlPlane(state_dir=Path(state), bin_dir=bin_dir)
        started = time.monotonic()
        plane.start()
        log(f"cluster: local control plane at {plane.server} (up in {time.monotonic() - started:.1f}s)")
        try:
            pids = {name: process.pid for name, process in plane.processes.items()}
            target = Target(kubeconfig=plane.kubeconfig, owned=True, pids=pids, node=True)
            install_crd(target)
            yield target
        finally:
            plane.stop()


def _local_node(kubeconfig: Path) -> bool:
    """Whether a cluster we did not start is a local one with its node (`make cluster`)."""
    return (kubeconfig.parent / "node" / "node.json").exists()


def install_crd(target: Target) -> None:
    api = target.api()
    try:
        install_crds(api, CRD)
    finally:
        api.close()
