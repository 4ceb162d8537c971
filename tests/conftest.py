"""Session-wide real control plane, a namespace per test, and the operator run in-process.

One etcd + kube-apiserver + kube-controller-manager for the whole run, built and started by
tools/localcluster.py — or the cluster named by SESAME_KUBECONFIG (e.g. `make cluster`'s
.sesame/kubeconfig, or a kind cluster). Never a silent skip: if it cannot start, the run fails
with the component's log tail.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from tests.support import leaks  # noqa: E402
from tests.support.cluster import Cluster, start_cluster  # noqa: E402


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with start_cluster() as running:
        yield running
        leaks.collect(running.api)  # leak canary: whatever is left in every namespace


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    yield name
    leaks.collect(cluster.api, name)  # leak canary: events, TaskRuns, pods before they go
    cluster.delete_namespace(name)


@pytest.fixture
def canary() -> str:
    """A secret value planted by a test; it must never show up outside the Secret itself."""
    return leaks.plant(f"CANARY-{uuid.uuid4().hex}")


# --- leak canary (tests/support/leaks.py) ------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def leak_canary() -> Iterator[None]:
    """Fails the session if any planted canary showed up in logs, output, events, statuses or pods."""
    with leaks.watching_subprocesses():
        yield
    leaks.REGISTRY.check()


# --- end of leak canary ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sesame-test-") as directory:
        yield Path(directory)


# Property tests are derandomized (a fixed seed per test) so CI runs are reproducible; set
# HYPOTHESIS_PROFILE=explore locally for fresh random examples.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the in-process operator's log to a failing test's report."""
    outcome = yield
    from tests.support.operator import runner_log_on_failure

    report = outcome.get_result()  # type: ignore[attr-defined]
    for title, text in report.sections:  # leak canary: everything a test printed or logged
        leaks.record(f"{item.nodeid} {title}", text)
    if report.when == "call" and runner_log_on_failure:
        for runner in runner_log_on_failure:
            lines = [line for line in runner.output.splitlines() if "urllib3" not in line]
            report.sections.append(("operator log (last 80 lines)", "\n".join(lines[-80:])))
        runner_log_on_failure.clear()
