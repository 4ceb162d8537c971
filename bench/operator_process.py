"""The operator as a separate process (`python -m sesame operator run …`), measured through /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KEEP_LOGS = "SESAME_BENCH_OPERATOR_LOGS"


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system, this process only (the operator starts no children)
    rss_mib: float
    peak_rss_mib: float


def usage(pid: int) -> Usage:
    # Field 2 (comm) may hold spaces; everything after its closing parenthesis is positional.
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )

    def mib(name: str) -> float:
        return int(status[name].split()[0]) / 1024

    return Usage((utime + stime) / CLOCK_TICKS, mib("VmRSS"), mib("VmHWM"))


@dataclass
class OperatorProcess:
    """One operator; its log goes to a temp file, shown when it dies early."""

    kubeconfig: Path
    scope: list[str]  # e.g. ["--namespace", "ns1"] or ["--all-namespaces"]
    env: dict[str, str] = field(default_factory=dict)
    entry: tuple[str, ...] = ("-m", "sesame")  # what `python` runs, before `operator run …`
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> OperatorProcess:
        # KEEP_LOGS names a directory: the logs are written there and kept (the test suite's leak
        # canary reads them); otherwise they are temp files, deleted at stop.
        handle, name = tempfile.mkstemp(
            prefix="sesame-bench-operator-", suffix=".log", dir=os.environ.get(KEEP_LOGS) or None
        )
        self.log_path = Path(name)
        command = [
            sys.executable,
            *self.entry,
            "operator",
            "run",
            *self.scope,
            "--standalone",
            "--log-level",
            "warning",
        ]
        environment = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        with os.fdopen(handle, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def usage(self) -> Usage:
        return usage(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (Kopf exits cleanly), SIGKILL after 15 s; only the PID started here."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path is not None and not os.environ.get(KEEP_LOGS):
            self.log_path.unlink(missing_ok=True)

    def wait_settled(self, quiet_seconds: float = 1.0, timeout: float = 30.0) -> None:
        """Until the operator burned (almost) no CPU for `quiet_seconds`: its queue is drained."""
        deadline = time.monotonic() + timeout
        before = self.usage().cpu_seconds
        while time.monotonic() < deadline:
            time.sleep(quiet_seconds)
            now = self.usage().cpu_seconds
            if now - before < 0.05 * quiet_seconds:
                return
            before = now
