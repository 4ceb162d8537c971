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

from localcluster import free_port  # noqa: E402
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
    cluster.delete_namespace(name)  # the leak canary looks at it first


@pytest.fixture
def canary() -> str:
    """A secret value planted by a test; it must never show up outside the Secret itself, not
    even in part (it is random)."""
    return leaks.plant(f"CANARY-{uuid.uuid4().hex}", partial=True)


# --- leak canary (tests/support/leaks.py) ------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def leak_canary() -> Iterator[None]:
    """Fails the session if any planted canary showed up in logs, output, events, statuses or pods."""
    with leaks.watching_subprocesses():
        yield
    leaks.REGISTRY.check()


@pytest.fixture(autouse=True)
def leak_canary_namespaces(request: pytest.FixtureRequest) -> Iterator[None]:
    """Namespaces a test made by any means (helm --create-namespace, kubectl, a tool) and left:
    looked at before the next test runs. Those deleted through `Cluster.delete_namespace` were
    looked at just before."""
    if "cluster" not in request.fixturenames:
        yield
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    before = leaks.namespaces(cluster.api)
    leaks.COLLECTED.clear()
    yield
    for name, uid in leaks.namespaces(cluster.api).items():
        if uid not in before.values() and name not in leaks.COLLECTED:
            leaks.collect(cluster.api, name)


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
    """Attach the in-process operators' logs to a failing test's report."""
    outcome = yield
    from tests.support.operator import runner_logs

    report = outcome.get_result()  # type: ignore[attr-defined]
    for title, text in report.sections:  # leak canary: everything a test printed or logged
        leaks.record(f"{item.nodeid} {title}", text)
    if report.when == "call":
        if report.failed:
            for log in runner_logs:
                lines = [line for line in log.text.splitlines() if "urllib3" not in line]
                report.sections.append((f"{log.title} (last 80 lines)", "\n".join(lines[-80:])))
        runner_logs.clear()


# --- the admission webhook in local mode, for the tests that need one ------------------------


@pytest.fixture
def webhook(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """Environment for a local-mode webhook scoped to `namespace`; yields the configuration name."""
    from sesame.webhook.configuration import delete_configuration

    name = f"sesame-test-{namespace}"
    monkeypatch.setenv("SESAME_WEBHOOK", "local")
    monkeypatch.setenv("SESAME_WEBHOOK_PORT", str(free_port()))
    monkeypatch.setenv("SESAME_WEBHOOK_CERT_DIR", str(tmp_path / "certs"))
    monkeypatch.setenv("SESAME_WEBHOOK_CONFIG_NAME", name)
    monkeypatch.setenv("SESAME_WEBHOOK_NAMESPACES", namespace)
    try:
        yield name
    finally:
        delete_configuration(cluster.api, name)
