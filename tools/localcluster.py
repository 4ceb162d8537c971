"""A real local Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager.

Built by `tools/build-controlplane.sh` from the Go module proxy, started on loopback with free
ports, RBAC on, an admin client certificate and a ServiceAccount signing key. Used by `make cluster`
(`python tools/localcluster.py up|down|status`) and by the pytest session fixture. Dev tooling:
never imported by the shipped package.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOOLS = Path(__file__).resolve().parent
BUILD_SCRIPT = TOOLS / "build-controlplane.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
READY_TIMEOUT = 90.0


class ControlPlaneError(RuntimeError):
    """A component that could not be built or would not become ready; says which and why."""


def build_binaries() -> Path:
    """Build (or find cached) binaries; return their directory."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"building the control plane failed (exit {result.returncode}); see above")
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- certificates -------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else subject
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usages = [x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client else [x509.ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        import ipaddress

        alt: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _name(common: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def write_pki(pki: Path) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), ServiceAccount key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert(_name("sesame-local-ca"), ca_key, None, ca=True)
    server_key = _key()
    server = _cert(
        _name("kube-apiserver"),
        server_key,
        (ca, ca_key),
        server_names=("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
    )
    admin_key = _key()
    admin = _cert(_name("sesame-admin", "system:masters"), admin_key, (ca, ca_key), client=True)
    sa_key = _key()
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": server.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = pki / name
        path.write_bytes(data)
        path.chmod(0o600)


def kubeconfig_text(server: str, pki: Path) -> str:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sesame-local",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": "sesame-admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [
            {"name": "sesame-local", "context": {"cluster": "sesame-local", "user": "sesame-admin"}}
        ],
        "current-context": "sesame-local",
    }
    return json.dumps(config, indent=2)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class LocalControlPlane:
    """One control plane in `state_dir`; every process it starts is recorded by PID and stopped by PID."""

    state_dir: Path
    bin_dir: Path
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    kcm_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def start(self) -> None:
        """Start etcd, kube-apiserver and kube-controller-manager and wait until each is ready."""
        self.logs.mkdir(parents=True, exist_ok=True)
        if not (self.pki / "ca.crt").exists():
            write_pki(self.pki)
        self.etcd_port = self.etcd_port or free_port()
        self.etcd_peer_port = self.etcd_peer_port or free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        self.kcm_port = self.kcm_port or free_port()
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki))
        self.kubeconfig.chmod(0o600)
        try:
            self.start_etcd()
            self.start_apiserver()
            self.start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self._write_pids()

    def _spawn(self, component: str, args: list[str]) -> None:
        log = (self.logs / f"{component}.log").open("ab")
        self.processes[component] = subprocess.Popen(
            [str(self.bin_dir / component), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not kill the cluster half-way
        )
        log.close()

    def _fail(self, component: str, why: str) -> ControlPlaneError:
        log = self.logs / f"{component}.log"
        return ControlPlaneError(f"{component} {why}; last lines of {log}:\n{_tail(log)}")

    def _wait(self, component: str, ready: object) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        process = self.processes[component]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self._fail(component, f"exited with code {process.returncode} before becoming ready")
            if callable(ready) and ready():
                return
            time.sleep(0.2)
        raise self._fail(component, f"did not become ready within {READY_TIMEOUT:.0f}s")

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name=sesame",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=sesame={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok(f"{client}/health"))

    def start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # Pods may be created right after their namespace, before the `default`
                # ServiceAccount exists; nothing here runs a kubelet that would mount its token.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver", lambda: self._https_ok("/readyz"))

    def start_controller_manager(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                f"--cert-dir={self.state_dir / 'kcm-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                # Only what Sesame's behaviour depends on: ownerReference GC, namespace deletion,
                # ServiceAccounts (and their tokens) and the Jobs that create pods.
                "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,"
                "serviceaccount-token-controller,root-ca-certificate-publisher-controller,job-controller",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._wait("kube-controller-manager", self._kcm_ready)

    def _kcm_ready(self) -> bool:
        return self._https_ok("/healthz", port=self.kcm_port, client_cert=False)

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback, fixed scheme)
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _https_ok(self, path: str, port: int | None = None, client_cert: bool = True) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if port is not None:  # kube-controller-manager serves a self-signed certificate of its own
            context = ssl._create_unverified_context()  # noqa: S323 (loopback health probe only)
        if client_cert:
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        url = f"https://127.0.0.1:{port or self.apiserver_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop_component(self, component: str) -> None:
        process = self.processes.pop(component, None)
        if process is None:
            return
        _terminate(process.pid, lambda: process.poll() is not None)
        process.wait()

    def restart_component(self, component: str) -> None:
        """Stop one component and start it again on the same ports (fault-injection tests)."""
        self.stop_component(component)
        {
            "etcd": self.start_etcd,
            "kube-apiserver": self.start_apiserver,
            "kube-controller-manager": self.start_controller_manager,
        }[component]()
        self._write_pids()

    def stop(self) -> None:
        for component in reversed(COMPONENTS):
            self.stop_component(component)
        pids = self.state_dir / "pids.json"
        if pids.exists():
            pids.unlink()

    def _write_pids(self) -> None:
        record = {
            "pids": {name: process.pid for name, process in self.processes.items()},
            "server": self.server,
        }
        (self.state_dir / "pids.json").write_text(json.dumps(record))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, gone: object) -> None:
    """SIGTERM, then SIGKILL after 10 s: only PIDs this module started."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if callable(gone) and gone():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def install_crds(api: Any, path: Path, timeout: float = 60.0) -> None:
    """Create or replace every CRD in `path` and wait until each is Established."""
    import yaml
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    extensions = client.ApiextensionsV1Api(api)
    for document in yaml.safe_load_all(path.read_text()):
        name = document["metadata"]["name"]
        try:
            existing = extensions.read_custom_resource_definition(name)
            document["metadata"]["resourceVersion"] = existing.metadata.resource_version
            extensions.replace_custom_resource_definition(name, document)
        except ApiException as error:
            if error.status != 404:
                raise
            extensions.create_custom_resource_definition(document)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            time.sleep(0.2)
        else:
            raise ControlPlaneError(f"CRD {name} was not established within {timeout:.0f}s")


# --- `make cluster` / `make cluster-down` -------------------------------------------------------


def _recorded(state: Path) -> dict[str, int]:
    pids_file = state / "pids.json"
    if not pids_file.exists():
        return {}
    pids: dict[str, int] = json.loads(pids_file.read_text())["pids"]
    return {name: pid for name, pid in pids.items() if _alive(pid)}


def cmd_up(state: Path) -> int:
    running = _recorded(state)
    if running:
        print(
            f"the local control plane is already running ({', '.join(sorted(running))}); "
            f"KUBECONFIG={state / 'kubeconfig'}"
        )
        return 0
    if state.exists():
        shutil.rmtree(state / "etcd", ignore_errors=True)
    bin_dir = build_binaries()
    plane = LocalControlPlane(state_dir=state, bin_dir=bin_dir)
    try:
        plane.start()
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    links = state / "bin"
    links.mkdir(exist_ok=True)
    for tool in ("kubectl", "helm"):
        link = links / tool
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(bin_dir / tool)
    print(f"local control plane is up at {plane.server} (etcd, kube-apiserver, kube-controller-manager)")
    print("use it with:")
    print(f"  export KUBECONFIG={state.resolve() / 'kubeconfig'} PATH={links.resolve()}:$PATH")
    print("  kubectl get ns")
    print("stop it with: make cluster-down")
    return 0


def cmd_down(state: Path) -> int:
    running = _recorded(state)
    if not running:
        print("the local control plane is not running; nothing to stop")
    for name in reversed(COMPONENTS):
        pid = running.get(name)
        if pid:
            _terminate(pid, lambda pid=pid: not _alive(pid))
            print(f"stopped {name} (pid {pid})")
    for path in ("etcd", "pids.json", "kubeconfig", "pki", "logs", "kcm-certs", "bin"):
        target = state / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists() or target.is_symlink():
            target.unlink()
    return 0


def cmd_status(state: Path) -> int:
    running = _recorded(state)
    if not running:
        print("the local control plane is not running")
        return 1
    for name, pid in sorted(running.items()):
        print(f"{name}: running (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--state", default=".sesame", help="state directory (default: .sesame)")
    args = parser.parse_args(argv)
    state = Path(args.state)
    if args.command == "build":
        print(build_binaries())
        return 0
    state.mkdir(parents=True, exist_ok=True)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command](state)


if __name__ == "__main__":
    sys.exit(main())
