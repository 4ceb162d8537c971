"""The two Kopf adjustments in sesame.controller.kopf_tuning keep Kopf's semantics."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import references

import sesame.manager  # noqa: F401  (registers every handler, applies the readiness fix)
from sesame.controller import kopf_tuning


def test_no_change_detecting_handlers_so_no_diff_base_is_needed() -> None:
    """NoDiffBase is only right while Sesame has no on.create/update/field/resume, daemon or timer."""
    registry = kopf.get_default_registry()
    assert not list(registry._changing.get_all_handlers())
    assert not list(registry._spawning.get_all_handlers())


def test_readiness_barrier_opens_exactly_when_the_last_toggle_is_dropped() -> None:
    assert kopf_tuning.apply_readiness_fix()

    async def scenario() -> tuple[bool, bool, int]:
        toggles = aiotoggles.ToggleSet(all)
        blockers = [await toggles.make_toggle(name=f"object {i}") for i in range(200)]
        wakeups = 0
        original = toggles.is_on

        def counting() -> bool:
            nonlocal wakeups
            wakeups += 1
            return original()

        toggles.is_on = counting  # type: ignore[method-assign]
        waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(50)]
        await asyncio.sleep(0)
        for blocker in blockers[:-1]:  # each object is indexed in its own task, so waiters run in between
            await toggles.drop_toggle(blocker)
            await asyncio.sleep(0)
        still_waiting = not any(w.done() for w in waiters)
        await toggles.drop_toggle(blockers[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
        return still_waiting, all(w.done() for w in waiters), wakeups

    still_waiting, all_released, wakeups = asyncio.run(scenario())
    assert still_waiting
    assert all_released
    # Kopf's own ToggleSet re-checks every waiter on every drop (200 × 50 checks here).
    assert wakeups < 2 * 200 + 2 * 50 + 10


def test_refused_events_in_a_terminating_namespace_are_debug_and_other_refusals_stay_loud(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poster = logging.getLogger("kopf._core.engines.posting")
    kopf_tuning.quiet_terminating_namespace_events()  # idempotent: sesame.manager already did it
    assert sum(isinstance(f, kopf_tuning.TerminatingNamespaceEvents) for f in poster.filters) == 1
    with caplog.at_level(logging.DEBUG, logger="kopf"):
        poster.error("Request attempt #1/9 failed; will retry: POST ... -> 'reason': 'NamespaceTerminating'")
        poster.error("Request attempt #1/9 failed; will retry: POST ... -> APIForbiddenError(403)")
    levels = [(r.levelname, "NamespaceTerminating" in r.getMessage()) for r in caplog.records]
    assert levels == [("DEBUG", True), ("ERROR", False)]


def test_pods_are_selected_by_the_api_server_and_lists_come_in_chunks() -> None:
    settings = kopf.OperatorSettings()
    kopf_tuning.narrow_watches(settings)
    pods = references.Resource("", "v1", "pods", kind="Pod", namespaced=True)
    secrets = references.Resource("", "v1", "secrets", kind="Secret", namespaced=True)
    metrics_pods = references.Resource("metrics.k8s.io", "v1beta1", "pods", kind="PodMetrics")
    assert settings.watching.label_selectors.collect(pods) == ["sesame.dev/taskrun"]
    # Secrets named by `from:` carry no Sesame label: those watches stay whole.
    assert settings.watching.label_selectors.collect(secrets) == []
    assert settings.watching.label_selectors.collect(metrics_pods) == []
    assert settings.watching.chunk_size == kopf_tuning.LIST_CHUNK_SIZE
