"""Run the operator in-process (kopf.testing.KopfRunner) for one namespace, capturing its logs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from kopf.testing import KopfRunner

from tests.support import leaks

runner_log_on_failure: list[KopfRunner] = []


@contextlib.contextmanager
def running_operator(namespaces: Sequence[str], extra: Sequence[str] = ()) -> Iterator[KopfRunner]:
    """The real operator (`sesame.manager`) at DEBUG level; logs are in `runner.output` afterwards."""
    args = ["run", "--standalone", "--verbose", "-m", "sesame.manager"]
    for namespace in namespaces:
        args += ["--namespace", namespace]
    runner = KopfRunner([*args, *extra], timeout=60)
    try:
        with runner:
            try:
                yield runner
            except BaseException:
                runner_log_on_failure.append(runner)
                raise
    finally:
        if runner.future.done() and runner.future.exception() is None:  # leak canary
            leaks.record(f"in-process operator log ({', '.join(namespaces)})", runner.output)
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.exception
