"""A real Kubernetes node for the local control plane, in namespaces of its own.

kubelet, containerd (+ runc, CNI bridge) and kube-proxy run as one process tree inside a new PID,
mount and network namespace, so the node shares this machine without changing it:

- kernel settings: the kubelet writes `vm.overcommit_memory`, `kernel.panic`, … at start; inside
  the node's mount namespace those `/proc/sys` files are bind-mounted copies, so the host keeps its
  values. Everything else the node writes under `/proc/sys/net` belongs to its own network namespace.
- network: node and pod addresses live only in the node's network namespace (documentation ranges,
  `NODE_IP`, `POD_CIDR`), which has no route out and no link to the host. The two ways across are
  Unix sockets in the state directory: the API server's egress proxy (an HTTP CONNECT proxy inside
  the node, for `kubectl logs`, webhook Services and the service proxy) and the way back to the API
  server (the node reaches it at `APISERVER_IP`, forwarded to the host's loopback port).
- mounts: the node mounts tmpfs over `/run`, `/var/lib` and `/var/log` and everything containerd
  and the kubelet mount lives in its own mount namespace, so it all disappears with it.
- processes: the node's init is PID 1 of its PID namespace; when it exits, the kernel ends every
  process of the node.
- cgroups: the kubelet's pod cgroups live under one root per v1 hierarchy (`cgroupRoot`), which
  the host side removes after the node has stopped.

Two halves, both this file: `run` (host side: the API forwarder, the namespaces, the cleanup) and
`init` (PID 1 inside: mounts, addresses, containerd, images, kubelet, kube-proxy, egress proxy).
Dev tooling: never imported by the shipped package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

NODE_NAME = "sesame-node"
NODE_IP = "198.51.100.2"  # TEST-NET-2: never routed anywhere
APISERVER_IP = "198.51.100.1"  # where the node (and pods, through kube-proxy) reach the API server
SERVICE_CIDR = "198.51.100.128/25"
POD_CIDR = "203.0.113.0/24"  # TEST-NET-3
KUBELET_PORT = 10250
# Host kernel settings the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables); inside
# the node they are bind-mounted copies.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
PRIVATE_TMPFS = ("/run", "/var/lib", "/var/log")
STOP_TIMEOUT = 30.0

log = logging.getLogger("sesame.node")


def first_service_ip() -> str:
    """The `kubernetes` Service's ClusterIP: the first address of the service range."""
    return str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))


@dataclass(frozen=True)
class NodeConfig:
    """Everything both halves need, written to `<state>/node.json` by the host side."""

    state: str
    bin_dir: str
    apiserver_port: int
    cgroup_root: str  # e.g. /sesame-node-1a2b3c: one subtree per v1 hierarchy
    images: dict[str, str]  # image name -> OCI archive

    @property
    def root(self) -> Path:
        return Path(self.state)

    @property
    def apiserver_socket(self) -> Path:
        return self.root / "apiserver.sock"

    @property
    def egress_socket(self) -> Path:
        return self.root / "egress.sock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def save(self) -> None:
        (self.root / "node.json").write_text(json.dumps(asdict(self), indent=2))

    @staticmethod
    def load(state: Path) -> NodeConfig:
        return NodeConfig(**json.loads((state / "node.json").read_text()))


# --- byte pipes ---------------------------------------------------------------------------------

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _splice(a: Streams, b: Streams) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


def forward_to(connect: Callable[[], Awaitable[Streams]]) -> Handler:
    """A connection handler that splices each accepted connection onto a new one from `connect`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await connect()
        except OSError as error:
            log.warning("forward: %s", error)
            writer.close()
            return
        await _splice((reader, writer), upstream)

    return handle


async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP CONNECT (the API server's egress selector, `proxyProtocol: HTTPConnect`) into the node."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not port.isdigit():
            raise ValueError(f"not a CONNECT request: {method} {target}")
        upstream = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 10)
    except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as error:
        with contextlib.suppress(Exception):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
        log.info("egress: refused: %s", error)
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await _splice((reader, writer), upstream)


# --- cgroups ------------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy: the v1 ones the kubelet runs on here, and the v2 one that
    runc also writes to in this hybrid layout."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            found.append(Path(line.split()[4]))
    return sorted(found)


def make_cgroup_root(name: str) -> None:
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name.lstrip("/")
        path.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":  # a new cpuset has no CPUs or memory nodes until given some
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((hierarchy / knob).read_text())


def live_cgroup_roots() -> set[str]:
    """The cgroup roots of the nodes whose host half (`localnode.py run --state DIR`) still runs."""
    roots = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone
            continue
        words = [a.decode(errors="replace") for a in argv]
        if len(words) >= 5 and words[1].endswith("localnode.py") and words[2] == "run":
            with contextlib.suppress(OSError, ValueError, TypeError):
                roots.add(NodeConfig.load(Path(words[4])).cgroup_root.lstrip("/"))
    return roots


def remove_orphaned_cgroup_roots() -> list[str]:
    """Roots a node left when it was killed too hard to clean up (SIGKILL, a VM restart): its host
    half is gone and no process is in them. Returns the names removed."""
    live = live_cgroup_roots()
    orphans = {
        top.name
        for hierarchy in cgroup_hierarchies()
        for top in hierarchy.glob("sesame-node-*")
        if top.is_dir() and top.name not in live
    }
    removed = []
    for name in sorted(orphans):
        occupied = any(
            (procs.read_text().strip() if procs.exists() else "")
            for hierarchy in cgroup_hierarchies()
            for procs in (hierarchy / name).rglob("cgroup.procs")
        )
        if not occupied and not remove_cgroup_root(name, timeout=1):
            removed.append(name)
    return removed


def remove_cgroup_root(name: str, timeout: float = 20.0) -> list[str]:
    """rmdir the subtree in every hierarchy, deepest first; returns what could not be removed."""
    deadline = time.monotonic() + timeout
    left: list[str] = []
    while True:
        left = []
        for hierarchy in cgroup_hierarchies():
            top = hierarchy / name.lstrip("/")
            if not top.exists():
                continue
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(FileNotFoundError):
                    try:
                        directory.rmdir()
                    except OSError:
                        left.append(str(directory))
            try:
                top.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(str(top))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)  # processes killed a moment ago are still leaving their cgroups


# --- the host side ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (FileNotFoundError, IndexError):
        return "gone"


async def host_side(config: NodeConfig) -> int:
    """Serve the API forwarder, start the node's namespaces, and clean up after them."""
    loop = asyncio.get_running_loop()
    config.logs.mkdir(parents=True, exist_ok=True)
    for name in remove_orphaned_cgroup_roots():
        print(f"node: removed cgroup root {name} of a node that was killed before it could", file=sys.stderr)
    make_cgroup_root(config.cgroup_root)
    with contextlib.suppress(FileNotFoundError):
        config.apiserver_socket.unlink()
    server = await asyncio.start_unix_server(
        forward_to(lambda: asyncio.open_connection("127.0.0.1", config.apiserver_port)),
        path=str(config.apiserver_socket),
    )
    init_log = (config.logs / "init.log").open("ab")
    # PID 1 of a new PID namespace: when it exits, the kernel ends every process of the node.
    unshare = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "--kill-child=SIGTERM",
            sys.executable,
            str(Path(__file__).resolve()),
            "init",
            "--state",
            config.state,
        ],
        stdout=init_log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    init_log.close()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    exited: asyncio.Future[int] = loop.run_in_executor(None, unshare.wait)
    stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if not exited.done():
        for pid in children(unshare.pid):  # the node's init, PID 1 inside
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
        except TimeoutError:
            for pid in children(unshare.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await exited
    else:
        code = unshare.returncode or 1
        print(f"node: its init exited with code {unshare.returncode}", file=sys.stderr)
    stopping.cancel()
    server.close()
    with contextlib.suppress(FileNotFoundError):
        config.apiserver_socket.unlink()
    left = remove_cgroup_root(config.cgroup_root)
    if left:
        print(f"node: cgroups left behind: {', '.join(left[:5])}", file=sys.stderr)
        code = code or 1
    return code


# --- the node side (PID 1 of the node's namespaces) ---------------------------------------------


def _sh(*command: str) -> None:
    subprocess.run(list(command), check=True, capture_output=True)


def private_mounts(config: NodeConfig) -> None:
    """tmpfs over what the node writes outside its state directory; copies over host tunables."""
    for path in PRIVATE_TMPFS:
        _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", path)
    copies = config.root / "sysctl"
    copies.mkdir(exist_ok=True)
    for name in KERNEL_TUNABLES:
        source = Path("/proc/sys") / name
        copy = copies / name.replace("/", ".")
        copy.write_text(source.read_text())
        _sh("mount", "--bind", str(copy), str(source))


def node_addresses() -> None:
    _sh("ip", "link", "set", "lo", "up")
    for address in (NODE_IP, APISERVER_IP):
        _sh("ip", "addr", "add", f"{address}/32", "dev", "lo")


class Supervisor:
    """Starts the node's components, reaps orphans (it is PID 1), and stops components in order."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ours: set[int] = set()  # children whose exit status a Popen still waits for
        self.lock = threading.Lock()

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        out = (self.config.logs / f"{name}.log").open("ab")
        with self.lock:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            self.ours.add(process.pid)
        out.close()
        self.processes[name] = process
        log.info("started %s (pid %d)", name, process.pid)
        return process

    def run(self, what: str, command: list[str]) -> None:
        """A short command, its exit status kept from the reaper."""
        with self.lock:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.ours.add(process.pid)
        output, _ = process.communicate()
        with self.lock:
            self.ours.discard(process.pid)
        if process.returncode != 0:
            tail = output.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{what} failed (exit {process.returncode}): {' / '.join(tail)}")

    def dead(self) -> str | None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                return f"{name} exited with code {process.returncode} (see {self.config.logs / name}.log)"
        return None

    def reap(self) -> None:
        """Collect orphans that were re-parented to PID 1 (containerd shims, container processes)."""
        with self.lock:
            for pid in children(os.getpid()):
                if pid not in self.ours and "zombie" in _state(pid):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)

    def stop(self) -> None:
        for name in ("kube-proxy", "kubelet", "containerd"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.info("stopped %s", name)


def wait_for(what: str, check: Callable[[], bool], supervisor: Supervisor, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        problem = supervisor.dead()
        if problem:
            raise RuntimeError(f"{problem} before {what}")
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def node_side(config: NodeConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s node-init %(message)s", stream=sys.stdout)
    from nodeconfig import paths  # the files the host side wrote

    private_mounts(config)
    node_addresses()
    files = paths(config)
    supervisor = Supervisor(config)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGCHLD, supervisor.reap)
        with contextlib.suppress(FileNotFoundError):
            config.egress_socket.unlink()
        egress = await asyncio.start_unix_server(connect_proxy, path=str(config.egress_socket))
        to_apiserver = await asyncio.start_server(
            forward_to(lambda: asyncio.open_unix_connection(str(config.apiserver_socket))),
            host=APISERVER_IP,
            port=config.apiserver_port,
        )
        try:
            await loop.run_in_executor(None, start_components, config, supervisor, files)
            log.info("node components started")
            while not stop.is_set():
                problem = supervisor.dead()
                if problem:
                    raise RuntimeError(problem)
                supervisor.reap()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            egress.close()
            to_apiserver.close()

    code = 0
    try:
        loop.run_until_complete(serve())
    except Exception as error:  # one line for the host side's error message, then stop everything
        log.error("node failed: %s", error)
        code = 1
    finally:
        supervisor.stop()
        with contextlib.suppress(FileNotFoundError):
            config.egress_socket.unlink()
    return code


def start_components(config: NodeConfig, supervisor: Supervisor, files: dict[str, Path]) -> None:
    from nodeconfig import CONTAINERD_SOCKET as socket

    bin_dir = Path(config.bin_dir)
    supervisor.spawn("containerd", [str(bin_dir / "containerd"), "--config", str(files["containerd"])])
    wait_for("containerd's socket", lambda: Path(socket).exists(), supervisor)
    for name, archive in config.images.items():
        started = time.monotonic()
        supervisor.run(
            f"importing {name}",
            [
                str(bin_dir / "ctr"),
                "--address",
                socket,
                "--namespace",
                "k8s.io",
                "images",
                "import",
                "--no-unpack",
                archive,
            ],
        )
        log.info("imported %s in %.1fs", name, time.monotonic() - started)
    supervisor.spawn(
        "kubelet",
        [
            str(bin_dir / "kubelet"),
            f"--config={files['kubelet']}",
            f"--kubeconfig={files['kubelet-kubeconfig']}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ],
    )
    supervisor.spawn("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={files['kube-proxy']}", "--v=1"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("half", choices=["run", "init"])
    parser.add_argument("--state", required=True, type=Path)
    args = parser.parse_args(argv)
    config = NodeConfig.load(args.state.resolve())
    if args.half == "run":
        return asyncio.run(host_side(config))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return node_side(config)


if __name__ == "__main__":
    sys.exit(main())
