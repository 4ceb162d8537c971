"""Run the operator in-process (kopf.testing.KopfRunner) for one namespace, capturing its logs."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence

from kopf.testing import KopfRunner

from tests.support import leaks


class OperatorLog(logging.Handler):
    """Every record logged in this process while an in-process operator runs. KopfRunner's own
    capture is readable only once the operator has stopped; this one is there whatever happened —
    a failed test, an operator that hangs — for the leak canary and the failure report."""

    def __init__(self, title: str) -> None:
        super().__init__(logging.NOTSET)
        self.title = title
        self.lines: list[str] = []
        self.guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s [%(levelname)-8s] %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is Python's to report
            self.handleError(record)
            return
        with self.guard:
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self.guard:
            return "\n".join(self.lines)


# In-process operator logs of the running test, attached to its report when it fails (conftest).
runner_logs: list[OperatorLog] = []


@contextlib.contextmanager
def in_process_operator(args: Sequence[str], title: str) -> Iterator[KopfRunner]:
    """`kopf ARGS` in this process. Whatever happens, everything it logged is checked by the leak
    canary, and it is attached to the report of a test that fails."""
    log = OperatorLog(title)
    runner_logs.append(log)
    root = logging.getLogger()
    root.addHandler(log)
    runner = KopfRunner(list(args), timeout=60)
    try:
        with runner:
            yield runner
    finally:
        root.removeHandler(log)
        leaks.record(log.title, log.text)
        if runner.future.done() and runner.future.exception() is None:  # also what Kopf printed
            leaks.record(f"{log.title}, output", runner.output)


@contextlib.contextmanager
def running_operator(namespaces: Sequence[str], extra: Sequence[str] = ()) -> Iterator[KopfRunner]:
    """The real operator (`sesame.manager`) at DEBUG level; logs are in `runner.output` afterwards."""
    args = ["run", "--standalone", "--verbose", "-m", "sesame.manager"]
    for namespace in namespaces:
        args += ["--namespace", namespace]
    with in_process_operator([*args, *extra], f"in-process operator log ({', '.join(namespaces)})") as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.exception
