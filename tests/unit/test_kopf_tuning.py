"""The Kopf adjustments in sesame.controller.kopf_tuning keep Kopf's semantics, and a Kopf upgrade
cannot pass unnoticed."""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from pathlib import Path

import kopf
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


def test_the_installed_kopf_is_the_one_the_private_fix_was_written_for() -> None:
    """The readiness fix patches Kopf's private ToggleSet: an upgrade must be checked by a person."""
    installed = version("kopf")
    assert installed in kopf_tuning.FOR_KOPF, (
        f"kopf {installed} is installed, but sesame/controller/kopf_tuning.py's readiness fix was "
        f"written for {', '.join(kopf_tuning.FOR_KOPF)}: if patches/kopf-toggleset-wake-on-flip.patch "
        "landed upstream, delete the fix; if the patch still applies to this Kopf, add it to FOR_KOPF"
    )
    assert aiotoggles.ToggleSet.make_toggle is kopf_tuning._make_toggle


def test_the_upstream_patch_matches_the_installed_kopf_source() -> None:
    """The patch file's "before" lines are the installed Kopf's, so it applies to that release."""
    patch = (
        Path(__file__).resolve().parents[2] / "patches" / "kopf-toggleset-wake-on-flip.patch"
    ).read_text()
    original = Path(inspect.getfile(aiotoggles)).read_text()
    removed = [line[1:] for line in patch.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert removed
    assert all(line in original.splitlines() for line in removed)


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
