"""A real local Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and one node (kubelet, containerd, runc, CNI, kube-proxy) that runs pods for real.

Built by `tools/build-binaries.sh` from the Go module proxy; the control plane listens on loopback
with free ports (RBAC and the Node authorizer on, an admin client certificate, a ServiceAccount
signing key); the node runs in namespaces of its own (tools/localnode.py) and changes nothing on
the host. Used by `make cluster` (`python tools/localcluster.py up|down|status`), the pytest
session fixture and the bench. Dev tooling: never imported by the shipped package.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import images
import localnode
import nodeconfig

TOOLS = Path(__file__).resolve().parent
BUILD_SCRIPT = TOOLS / "build-binaries.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node")
READY_TIMEOUT = 90.0
NODE_READY_TIMEOUT = 120.0


class ControlPlaneError(RuntimeError):
    """A component that could not be built or would not become ready; says which and why."""


def build_binaries() -> Path:
    """Build (or find cached) binaries; return their directory."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"building the local cluster failed (exit {result.returncode}); see above")
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


def _write(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(
    name: str, subject: x509.Name, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], **kind: Any
) -> dict[str, bytes]:
    key = _key()
    return {f"{name}.crt": _pem(_cert(subject, key, issuer, **kind)), f"{name}.key": _pem_key(key)}


def _ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def write_pki(pki: Path) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), ServiceAccount key pair,
    and the API server's client certificate for kubelets."""
    ca_key = _key()
    ca = _cert(_name("sesame-local-ca"), ca_key, None, ca=True)
    issuer = (ca, ca_key)
    sa_key = _key()
    files = {
        "ca.crt": _pem(ca),
        "ca.key": _pem_key(ca_key),
        **_issue(
            "apiserver",
            _name("kube-apiserver"),
            issuer,
            server_names=(
                "127.0.0.1",
                "localhost",
                localnode.APISERVER_IP,  # how the node and pods reach it
                localnode.first_service_ip(),  # the `kubernetes` Service
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        ),
        **_issue("admin", _name("sesame-admin", "system:masters"), issuer, client=True),
        **_issue(
            "apiserver-kubelet-client",
            _name("kube-apiserver-kubelet-client", "system:masters"),
            issuer,
            client=True,
        ),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    # A CA of its own for the one client certificate the API server shows admission webhooks:
    # a webhook that trusts it (SESAME_WEBHOOK_CLIENT_CA) answers the API server and nobody else.
    webhook_ca_key = _key()
    webhook_ca = _cert(_name("sesame-local-webhook-client-ca"), webhook_ca_key, None, ca=True)
    files["webhook-client-ca.crt"] = _pem(webhook_ca)
    files.update(
        _issue("apiserver-webhook-client", _name("kube-apiserver"), (webhook_ca, webhook_ca_key), client=True)
    )
    _write(pki, files)


def write_node_pki(ca_pki: Path, node_pki: Path) -> None:
    """The node's identities: kubelet client (Node authorizer) and serving certs, kube-proxy."""
    issuer = _ca(ca_pki)
    node = localnode.NODE_NAME
    _write(
        node_pki,
        {
            **_issue("kubelet-client", _name(f"system:node:{node}", "system:nodes"), issuer, client=True),
            **_issue("kubelet-serving", _name(node), issuer, server_names=(localnode.NODE_IP, node)),
            **_issue("kube-proxy", _name("system:kube-proxy"), issuer, client=True),
        },
    )


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
    """One cluster in `state_dir`; every process it starts is recorded by PID and stopped by PID.

    `with_node=False` starts the control plane alone (the bench measures the operator, not a kubelet).
    """

    state_dir: Path
    bin_dir: Path
    with_node: bool = True
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    kcm_port: int = 0
    scheduler_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    node_config: localnode.NodeConfig | None = None
    ready_seconds: dict[str, float] = field(default_factory=dict)  # component -> start to ready

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
    def node_dir(self) -> Path:
        return self.state_dir / "node"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def start(self) -> None:
        """Start every component in order and wait until each is ready (the node: Ready)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        if not (self.pki / "ca.crt").exists():
            write_pki(self.pki)
        self.etcd_port = self.etcd_port or free_port()
        self.etcd_peer_port = self.etcd_peer_port or free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        self.kcm_port = self.kcm_port or free_port()
        self.scheduler_port = self.scheduler_port or free_port()
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki))
        self.kubeconfig.chmod(0o600)
        try:
            if self.with_node:
                self.prepare_node()
            self.start_etcd()
            self.start_apiserver()
            self.start_controller_manager()
            if self.with_node:
                self.start_scheduler()
                self.start_node()
        except BaseException:
            self.stop()
            raise
        self._write_pids()

    def _spawn(self, component: str, args: list[str], program: list[str] | None = None) -> None:
        log = (self.logs / f"{component}.log").open("ab")
        self.processes[component] = subprocess.Popen(
            [*(program or [str(self.bin_dir / component)]), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not kill the cluster half-way
        )
        log.close()
        self._write_pids()

    def _fail(self, component: str, why: str) -> ControlPlaneError:
        log = self.logs / f"{component}.log"
        return ControlPlaneError(f"{component} {why}; last lines of {log}:\n{_tail(log)}")

    def _wait(self, component: str, ready: object, timeout: float = READY_TIMEOUT) -> None:
        started = time.monotonic()
        deadline = started + timeout
        process = self.processes[component]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self._fail(component, f"exited with code {process.returncode} before becoming ready")
            if callable(ready) and ready():
                self.ready_seconds[component] = round(time.monotonic() - started, 1)
                return
            time.sleep(0.2)
        raise self._fail(component, f"did not become ready within {timeout:.0f}s")

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

    def _egress_config(self) -> Path:
        """Traffic to the cluster network (kubelets, Service webhooks, the service proxy) goes
        through the node's HTTP CONNECT proxy: the node's addresses exist only inside it."""
        path = self.state_dir / "egress-selector.yaml"
        assert self.node_config is not None
        config = {
            "apiVersion": "apiserver.k8s.io/v1beta1",
            "kind": "EgressSelectorConfiguration",
            "egressSelections": [
                {
                    "name": "cluster",
                    "connection": {
                        "proxyProtocol": "HTTPConnect",
                        "transport": {"uds": {"udsName": str(self.node_config.egress_socket)}},
                    },
                }
            ],
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def _admission_config(self) -> Path:
        """The API server presents its webhook client certificate to every admission webhook."""
        credentials = self.state_dir / "webhook-credentials.kubeconfig"
        user = {
            "client-certificate": str(self.pki / "apiserver-webhook-client.crt"),
            "client-key": str(self.pki / "apiserver-webhook-client.key"),
        }
        credentials.write_text(
            json.dumps({"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]})
        )
        webhook = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(credentials),
        }
        path = self.state_dir / "admission.yaml"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "AdmissionConfiguration",
                    "plugins": [
                        {"name": "MutatingAdmissionWebhook", "configuration": webhook},
                        {"name": "ValidatingAdmissionWebhook", "configuration": webhook},
                    ],
                }
            )
        )
        return path

    def start_apiserver(self) -> None:
        pki = self.pki
        node_flags = []
        if self.with_node:
            node_flags = [
                f"--advertise-address={localnode.APISERVER_IP}",
                f"--egress-selector-config-file={self._egress_config()}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP",  # no DNS for node names here
                # Webhook Services are called at their endpoints (no kube-proxy on the host).
                "--enable-aggregator-routing=true",
            ]
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                *(node_flags or ["--advertise-address=127.0.0.1"]),
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={localnode.SERVICE_CIDR}",
                "--allow-privileged=true",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
                f"--admission-control-config-file={self._admission_config()}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
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
                # What Sesame's behaviour and its Helm chart depend on: ownerReference GC,
                # namespace deletion, ServiceAccounts and their tokens, Jobs and Deployments,
                # Service endpoints, and the node lifecycle (it lifts the not-ready taint).
                "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,"
                "serviceaccount-token-controller,root-ca-certificate-publisher-controller,job-controller,"
                "deployment-controller,replicaset-controller,endpoints-controller,endpointslice-controller,"
                "node-lifecycle-controller,disruption-controller,pod-garbage-collector-controller",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        self._wait("kube-controller-manager", lambda: self._https_ok("/healthz", port=self.kcm_port))

    def start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._wait("kube-scheduler", lambda: self._https_ok("/healthz", port=self.scheduler_port))

    def prepare_node(self) -> None:
        """Images, certificates and configuration files, before anything starts."""
        try:
            built = images.node_images()
        except images.ImageError as error:
            raise ControlPlaneError(f"node images: {error}") from None
        self.node_config = localnode.NodeConfig(
            state=str(self.node_dir.resolve()),
            bin_dir=str(self.bin_dir),
            apiserver_port=self.apiserver_port,
            cgroup_root=f"/sesame-node-{os.getpid()}-{self.apiserver_port}",
            images={name: str(path) for name, path in built.items()},
        )
        write_node_pki(self.pki, nodeconfig.paths(self.node_config)["pki"])
        nodeconfig.write(self.node_config, self.pki / "ca.crt", images.PAUSE_IMAGE)
        self.node_config.save()

    def start_node(self) -> None:
        assert self.node_config is not None
        self._spawn(
            "node",
            ["run", "--state", self.node_config.state],
            program=[sys.executable, str(TOOLS / "localnode.py")],
        )
        self._wait("node", self._node_ready, timeout=NODE_READY_TIMEOUT)

    def node_pid_namespace(self) -> str | None:
        """The node's PID namespace (`pid:[…]`): its init is the child of `unshare`, itself the
        child of the node's host side."""
        process = self.processes.get("node")
        if process is None:
            return None
        for unshare in localnode.children(process.pid):
            for init in localnode.children(unshare):
                try:
                    return os.readlink(f"/proc/{init}/ns/pid")
                except OSError:
                    return None
        return None

    def _node_ready(self) -> bool:
        node = self._get_json(f"/api/v1/nodes/{localnode.NODE_NAME}")
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _fail_node(self, why: str) -> ControlPlaneError:
        """The node's own logs say more than its host side: name the component that stopped."""
        assert self.node_config is not None
        logs = self.node_config.logs
        init = _tail(logs / "init.log", 10)
        parts = [f"node {why}; last lines of {logs / 'init.log'}:\n{init}"]
        for component in ("containerd", "kubelet", "kube-proxy"):
            if f"{component} exited" in init or component == "kubelet":
                parts.append(f"last lines of {logs / component}.log:\n{_tail(logs / f'{component}.log', 15)}")
        return ControlPlaneError("\n".join(parts))

    def _get_json(self, path: str) -> dict[str, Any] | None:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        url = f"https://127.0.0.1:{self.apiserver_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback, fixed scheme)
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _https_ok(self, path: str, port: int | None = None) -> bool:
        if port is None:
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        else:  # kube-controller-manager and kube-scheduler serve self-signed certificates of their own
            context = ssl._create_unverified_context()  # noqa: S323 (loopback health probe only)
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
        timeout = localnode.STOP_TIMEOUT + 15 if component == "node" else 10
        _terminate(process.pid, lambda: process.poll() is not None, timeout)
        process.wait()

    def restart_component(self, component: str) -> None:
        """Stop one component and start it again on the same ports (fault-injection tests)."""
        self.stop_component(component)
        {
            "etcd": self.start_etcd,
            "kube-apiserver": self.start_apiserver,
            "kube-controller-manager": self.start_controller_manager,
            "kube-scheduler": self.start_scheduler,
        }[component]()
        self._write_pids()

    def stop(self) -> None:
        for component in reversed(COMPONENTS):
            self.stop_component(component)
        if self.node_config is not None:  # whatever the node's host side could not remove
            localnode.remove_cgroup_root(self.node_config.cgroup_root, timeout=1)
        pids = self.state_dir / "pids.json"
        if pids.exists():
            pids.unlink()

    def _write_pids(self) -> None:
        record = {
            "pids": {name: process.pid for name, process in self.processes.items()},
            "server": self.server,
            "cgroup_root": self.node_config.cgroup_root if self.node_config else None,
        }
        (self.state_dir / "pids.json").write_text(json.dumps(record))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, gone: object, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout` s: only PIDs this module started."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
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


def _record(state: Path) -> dict[str, Any]:
    pids_file = state / "pids.json"
    if not pids_file.exists():
        return {}
    record: dict[str, Any] = json.loads(pids_file.read_text())
    return record


def _recorded(state: Path) -> dict[str, int]:
    pids: dict[str, int] = _record(state).get("pids") or {}
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
    print(
        f"local cluster is up at {plane.server}: etcd, kube-apiserver, kube-controller-manager, "
        f"kube-scheduler and node {localnode.NODE_NAME} (Ready)"
    )
    print(
        "seconds to ready: " + ", ".join(f"{name} {seconds}" for name, seconds in plane.ready_seconds.items())
    )
    print("use it with:")
    print(f"  export KUBECONFIG={state.resolve() / 'kubeconfig'} PATH={links.resolve()}:$PATH")
    print("  kubectl get ns")
    print("stop it with: make cluster-down")
    return 0


def cmd_down(state: Path) -> int:
    record = _record(state)
    running = _recorded(state)
    if not running:
        print("the local cluster is not running; nothing to stop")
    for name in reversed(COMPONENTS):
        pid = running.get(name)
        if pid:
            timeout = localnode.STOP_TIMEOUT + 15 if name == "node" else 10
            _terminate(pid, lambda pid=pid: not _alive(pid), timeout)
            print(f"stopped {name} (pid {pid})")
    left = localnode.remove_cgroup_root(record["cgroup_root"], timeout=5) if record.get("cgroup_root") else []
    for entry in state.iterdir() if state.exists() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
    if left:
        print(f"error: cgroups left behind: {', '.join(left)}", file=sys.stderr)
        return 1
    return 0


def cmd_status(state: Path) -> int:
    running = _recorded(state)
    if not running:
        print("the local cluster is not running")
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
