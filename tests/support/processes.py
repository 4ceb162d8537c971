"""The operator as a separate process (`python -m sesame operator run …`), for fault tests that kill it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support import leaks
from tests.support.cluster import Cluster

STOP_TIMEOUT = 20.0


class OperatorProcess:
    """One operator process; its stdout and stderr go to `log` (appended across restarts)."""

    def __init__(
        self,
        cluster: Cluster,
        namespaces: Sequence[str],
        log: Path,
        args: Sequence[str] = ("--standalone",),
        env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespaces = list(namespaces)
        self.log = log
        self.args = list(args)
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "sesame", "operator", "run", "--log-level", "debug"]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        return [*command, *self.args]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts}: {' '.join(self.command()[1:])}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.cluster.env(), **self.env},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """`kill -9`: no cleanup, no goodbye to the peering object."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> int | None:
        """SIGTERM (Kopf's graceful exit), SIGKILL if it hangs; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


@contextlib.contextmanager
def operator_process(
    cluster: Cluster,
    namespaces: Sequence[str],
    log: Path,
    args: Sequence[str] = ("--standalone",),
    env: dict[str, str] | None = None,
    start: bool = True,
) -> Iterator[OperatorProcess]:
    """An operator process that is stopped (and its log checked by the leak canary) at the end."""
    process = OperatorProcess(cluster, namespaces, log, args, env)
    if start:
        process.start()
    try:
        yield process
    except BaseException:
        print(f"--- operator log {log} (last lines) ---\n{process.tail()}")
        raise
    finally:
        process.stop()
        leaks.record(f"operator process log {log.name}", process.output())


# --- API calls through outages ---------------------------------------------------------------


def retrying(action: Any, *args: Any, attempts: int = 200, pause: float = 0.25, **kwargs: Any) -> Any:
    """Call `action` until the API server answers (it may be restarting); 409 counts as done."""
    from kubernetes.client.exceptions import ApiException

    for attempt in range(attempts):
        try:
            return action(*args, **kwargs)
        except ApiException as error:
            if error.status == 409:
                return None
            if error.status not in (0, None, 429, 500, 502, 503, 504) or attempt == attempts - 1:
                raise
        except Exception:  # connection refused or reset while the API server restarts
            if attempt == attempts - 1:
                raise
        time.sleep(pause)
    return None
