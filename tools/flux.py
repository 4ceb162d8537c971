"""Flux's source-, kustomize- and helm-controller as local processes against a local cluster.

Built from their Go modules by `tools/build-binaries.sh` (versions in versions.env; the CRDs sit in
crds/ next to each binary). Every address is on 127.0.0.1 with a free port: metrics, health and
source-controller's artifact server (`--storage-addr`, and `--storage-adv-addr` for the artifact
URLs the other two fetch). They read `KUBECONFIG` and `RUNTIME_NAMESPACE` (they have no
--kubeconfig flag), and are started and stopped by PID. Stop them only after every Flux object is
gone (`delete_flux_objects`): their finalizers need the controllers.

Used by the GitOps tests (a session fixture) and by `make flux` / `make flux-down`
(`python tools/flux.py up|down --state DIR`, next to `make cluster`'s state). Dev tooling: never
imported by the shipped package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localcluster import ControlPlaneError, _alive, _tail, _terminate, build_binaries, free_port

CONTROLLERS = ("source-controller", "kustomize-controller", "helm-controller")
RUNTIME_NAMESPACE = "flux-system"
# Flux objects, the order they are deleted in (appliers before the sources they read).
KINDS = (
    "kustomizations.kustomize.toolkit.fluxcd.io",
    "helmreleases.helm.toolkit.fluxcd.io",
    "helmcharts.source.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io",
    "helmrepositories.source.toolkit.fluxcd.io",
    "ocirepositories.source.toolkit.fluxcd.io",
    "buckets.source.toolkit.fluxcd.io",
)
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def crd_files(bin_dir: Path) -> list[Path]:
    """Each controller's CRDs, kept next to its real binary by build-binaries.sh."""
    return sorted(
        file
        for controller in CONTROLLERS
        for file in ((bin_dir / controller).resolve().parent / "crds").glob("*.yaml")
    )


@dataclass
class Flux:
    """The three controllers of one cluster; state (logs, artifacts, pids.json) in `state_dir`."""

    kubeconfig: Path
    bin_dir: Path
    state_dir: Path
    health_ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def install_crds(self) -> None:
        files = crd_files(self.bin_dir)
        if not files:
            raise ControlPlaneError(f"no Flux CRDs next to the controllers in {self.bin_dir}")
        arguments = [argument for file in files for argument in ("-f", str(file))]
        self.kubectl("apply", "--server-side", "--force-conflicts", *arguments)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *arguments)

    def start(self) -> None:
        """CRDs, the runtime namespace, then each controller until its /readyz answers."""
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "artifacts").mkdir(exist_ok=True)
        self.install_crds()
        if not self.kubectl("get", "namespace", RUNTIME_NAMESPACE, "--ignore-not-found", "-o", "name"):
            self.kubectl("create", "namespace", RUNTIME_NAMESPACE)
        storage_port = free_port()
        extra = {
            "source-controller": [
                f"--storage-path={self.state_dir / 'artifacts'}",
                f"--storage-addr=127.0.0.1:{storage_port}",
                f"--storage-adv-addr=127.0.0.1:{storage_port}",
            ],
            # Remote bases would fetch from the internet at build time; a test never wants that.
            "kustomize-controller": ["--no-remote-bases=true", "--requeue-dependency=5s"],
            "helm-controller": ["--requeue-dependency=5s"],
        }
        try:
            for controller in CONTROLLERS:
                self.health_ports[controller] = free_port()
                self._spawn(
                    controller,
                    [
                        f"--metrics-addr=127.0.0.1:{free_port()}",
                        f"--health-addr=127.0.0.1:{self.health_ports[controller]}",
                        "--events-addr=",
                        "--log-encoding=console",
                        *extra[controller],
                    ],
                )
            for controller in CONTROLLERS:
                self._wait_ready(controller)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, controller: str, args: list[str]) -> None:
        with (self.logs / f"{controller}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(self.bin_dir / controller), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **os.environ,
                    "KUBECONFIG": str(self.kubeconfig),
                    "RUNTIME_NAMESPACE": RUNTIME_NAMESPACE,
                },
                start_new_session=True,
            )
        self._processes[controller] = process
        self.pids[controller] = process.pid
        (self.state_dir / "pids.json").write_text(json.dumps(self.pids))

    def _ready(self, controller: str) -> bool:
        url = f"http://127.0.0.1:{self.health_ports[controller]}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self, controller: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            process = self._processes[controller]
            if process.poll() is not None:
                raise self._fail(controller, f"exited with code {process.returncode}")
            if self._ready(controller):
                return
            time.sleep(0.2)
        raise self._fail(controller, f"was not ready within {READY_TIMEOUT:.0f}s")

    def _fail(self, controller: str, why: str) -> ControlPlaneError:
        log = self.logs / f"{controller}.log"
        return ControlPlaneError(f"{controller} {why}; last lines of {log}:\n{_tail(log)}")

    def delete_flux_objects(self, timeout: float = 120) -> None:
        """Delete every Flux object and wait until they are gone (the controllers clear the
        finalizers: a HelmRelease uninstalls its release, a Kustomization prunes what it applied)."""
        for kind in KINDS:
            self.kubectl(
                "delete", kind, "--all", "--all-namespaces", "--wait=true", f"--timeout={timeout:.0f}s"
            )

    def stop(self) -> None:
        """SIGTERM each controller this object started (by PID), SIGKILL if it hangs."""
        for controller in reversed(CONTROLLERS):
            pid = self.pids.pop(controller, None)
            process = self._processes.pop(controller, None)
            if pid is None:
                continue
            if process is not None:
                _terminate(pid, lambda process=process: process.poll() is not None, STOP_TIMEOUT)
                process.wait()
            else:
                _terminate(pid, lambda pid=pid: not _alive(pid), STOP_TIMEOUT)
        pids = self.state_dir / "pids.json"
        if pids.exists():
            pids.unlink()

    def log(self, controller: str) -> str:
        try:
            return (self.logs / f"{controller}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --- `make flux` / `make flux-down` ---------------------------------------------------------------


def cmd_up(state: Path) -> int:
    kubeconfig = state / "kubeconfig"
    if not kubeconfig.exists():
        print(f"error: no cluster in {state}: run `make cluster` first", file=sys.stderr)
        return 1
    flux_state = state / "flux"
    flux_state.mkdir(exist_ok=True)
    recorded = flux_state / "pids.json"
    if recorded.exists() and any(_alive(pid) for pid in json.loads(recorded.read_text()).values()):
        print(f"Flux is already running (pids in {recorded})")
        return 0
    flux = Flux(kubeconfig=kubeconfig, bin_dir=build_binaries(), state_dir=flux_state)
    try:
        flux.start()
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Flux controllers are running against {kubeconfig}: {', '.join(CONTROLLERS)}")
    print(f"logs: {flux.logs}; artifacts: {flux_state / 'artifacts'}; stop with: make flux-down")
    return 0


def cmd_down(state: Path) -> int:
    flux_state = state / "flux"
    recorded = flux_state / "pids.json"
    if not recorded.exists():
        return 0  # not running: nothing to do (cluster-down calls this every time)
    flux = Flux(kubeconfig=state / "kubeconfig", bin_dir=build_binaries(), state_dir=flux_state)
    flux.pids = {name: pid for name, pid in json.loads(recorded.read_text()).items() if _alive(pid)}
    if flux.pids:
        try:
            flux.delete_flux_objects()
        except (ControlPlaneError, subprocess.TimeoutExpired) as error:
            print(f"warning: Flux objects were not deleted ({error}); stopping Flux anyway", file=sys.stderr)
    for controller, pid in sorted(flux.pids.items()):
        print(f"stopping {controller} (pid {pid})")
    flux.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument(
        "--state", default=".sesame", help="the local cluster's state directory (default: .sesame)"
    )
    args = parser.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down}[args.command](Path(args.state))


if __name__ == "__main__":
    sys.exit(main())
