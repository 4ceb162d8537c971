"""`sesame run --remote …` as a subprocess whose output can be awaited line by line while it runs.

What it printed is handed to the leak canary when it ends, like every other `sesame` subprocess.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.support import leaks

SESAME = str(Path(sys.executable).parent / "sesame")


@dataclass
class Finished:
    code: int
    out: str
    err: str


class LiveRun:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.args = [SESAME, "run", *args]
        self.process = subprocess.Popen(
            self.args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.changed = threading.Condition()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, "out"), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, "err"), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: IO[str], name: str) -> None:
        for line in stream:
            with self.changed:
                self.lines[name].append(line)
                self.changed.notify_all()

    def wait_for_line(self, fragment: str, stream: str = "err", timeout: float = 60) -> str:
        """The first line of `stream` that contains `fragment` (the run goes on)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = next((line for line in self.lines[stream] if fragment in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self.process.poll() is not None and not any(r.is_alive() for r in self.readers)
                ):
                    raise AssertionError(
                        f"no line with {fragment!r} on std{stream} of `{' '.join(self.args[1:])}`; "
                        f"so far: {''.join(self.lines['out'] + self.lines['err'])[-3000:]}"
                    )
                self.changed.wait(min(left, 0.5))

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 120) -> Finished:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for reader in self.readers:
            reader.join(10)
        out, err = "".join(self.lines["out"]), "".join(self.lines["err"])
        command = " ".join(self.args[1:])[:80]
        leaks.record(f"output of `sesame {command}`", out)
        leaks.record(f"stderr of `sesame {command}`", err)
        return Finished(code, out, err)


def run_to_end(env: dict[str, str], *args: str, timeout: float = 120) -> Finished:
    return LiveRun(env, *args).finish(timeout)


def taskrun_name(finished_or_line: Finished | str) -> str:
    """The TaskRun name from `sesame: TaskRun NAME created in namespace …`."""
    text = finished_or_line.err if isinstance(finished_or_line, Finished) else finished_or_line
    line = next(
        line for line in text.splitlines() if line.startswith("sesame: TaskRun ") and " created " in line
    )
    return line.split()[2]
