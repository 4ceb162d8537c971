"""What the host looks like, so a test can prove the local cluster changed nothing on it.

A node shares this machine with its users and CI: it must not change a kernel setting, touch the
host's network, or leave a mount, a cgroup or a process behind. `capture()` reads each of those
from the host's own namespaces; `changes(before, after, ours)` lists every difference in one line
each. Other clusters may run on the same machine at the same time (a developer's `make cluster`):
cgroup roots and processes are judged by what belongs to *this* cluster (`Ours`).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Settings the kernel itself changes as it runs (not something a node could have written).
VOLATILE_SYSCTLS = frozenset({"/proc/sys/kernel/ns_last_pid"})
# Processes of these programs are the cluster's (the host never runs them on its own).
CLUSTER_PROGRAMS = frozenset(
    {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "catatonit",
    }
)


@dataclass(frozen=True)
class Ours:
    """How to recognise this cluster's leftovers among other clusters' live parts."""

    state_dir: str  # every control-plane process names it in its arguments
    cgroup_root: str | None  # e.g. /sesame-node-123-45678
    pid_namespace: str | None  # the node's PID namespace (`pid:[4026532…]`)


@dataclass(frozen=True)
class HostState:
    sysctls: dict[str, str]
    links: tuple[str, ...]
    addresses: tuple[str, ...]
    routes: tuple[str, ...]
    firewall: tuple[str, ...]
    mounts: tuple[str, ...]
    cgroups: tuple[str, ...]
    cluster_processes: tuple[str, ...]


def _sysctls() -> dict[str, str]:
    values = {}
    for directory, _, files in os.walk("/proc/sys"):
        for name in files:
            path = os.path.join(directory, name)
            if path in VOLATILE_SYSCTLS:
                continue
            try:
                if not os.stat(path).st_mode & 0o200:
                    continue  # read-only: a statistic, not a setting
                with open(path) as handle:
                    values[path] = handle.read()
            except OSError:
                continue
    return values


def _ip(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    parsed: list[dict[str, object]] = json.loads(out or "[]")
    return parsed


def _firewall() -> tuple[str, ...]:
    """The host's iptables rules (both families); comment lines carry dates, so they are dropped."""
    rules: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        try:
            out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        except FileNotFoundError:
            continue
        rules += [f"{tool}: {line}" for line in out.splitlines() if line and not line.startswith("#")]
    return tuple(rules)


def _mounts() -> tuple[str, ...]:
    """Mount point, type and source of every host mount (IDs and options left out)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        found.append(f"{fields[4]} {' '.join(after.split()[:2])}")
    return tuple(sorted(found))


def _cgroups() -> tuple[str, ...]:
    """The top-level groups of every hierarchy (the kubelet creates its roots there)."""
    found = []
    for hierarchy in sorted(Path("/sys/fs/cgroup").iterdir()):
        if hierarchy.is_dir():
            found += [str(child) for child in hierarchy.iterdir() if child.is_dir()]
    return tuple(sorted(found))


def _cluster_processes() -> tuple[str, ...]:
    """`pid N [pid-namespace]: command` of every process that runs a cluster program."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            program = Path(os.readlink(entry / "exe")).name
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            namespace = os.readlink(entry / "ns" / "pid")
        except OSError:
            continue
        if program in CLUSTER_PROGRAMS or "localnode.py" in command:
            found.append(f"pid {entry.name} [{namespace}]: {command.strip()[:160]}")
    return tuple(sorted(found))


def pid_namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def capture() -> HostState:
    return HostState(
        sysctls=_sysctls(),
        links=tuple(sorted(str(link.get("ifname")) for link in _ip("link"))),
        addresses=tuple(
            sorted(
                f"{link.get('ifname')} {info.get('local')}/{info.get('prefixlen')}"
                for link in _ip("addr")
                for info in link.get("addr_info") or []  # type: ignore[union-attr]
                if isinstance(info, dict)
            )
        ),
        routes=tuple(
            sorted(json.dumps(route, sort_keys=True) for route in _ip("route", "show", "table", "all"))
        ),
        firewall=_firewall(),
        mounts=_mounts(),
        cgroups=_cgroups(),
        cluster_processes=_cluster_processes(),
    )


def _ours(field: str, item: str, ours: Ours) -> bool:
    """Whether a cgroup or process belongs to this cluster (others may come and go meanwhile)."""
    if field == "cgroups":
        name = Path(item).name
        return not name.startswith("sesame-node-") or (ours.cgroup_root or "").lstrip("/") == name
    if field == "cluster_processes":
        return ours.state_dir in item or bool(ours.pid_namespace and f"[{ours.pid_namespace}]" in item)
    return True


def changes(before: HostState, after: HostState, ours: Ours) -> list[str]:
    """Every way `after` differs from `before` that this cluster could have caused, one line each."""
    found = []
    for path, old in sorted(before.sysctls.items()):
        new = after.sysctls.get(path, "(gone)")
        if new != old:
            found.append(f"kernel setting {path} was {old.strip()!r}, now {new.strip()!r}")
    for field in ("links", "addresses", "routes", "firewall", "mounts", "cgroups", "cluster_processes"):
        was, now = set(getattr(before, field)), set(getattr(after, field))
        found += [f"{field}: added {item}" for item in sorted(now - was) if _ours(field, item, ours)]
        if field not in ("cgroups", "cluster_processes"):  # others' clusters may stop meanwhile
            found += [f"{field}: removed {item}" for item in sorted(was - now)]
    return found
