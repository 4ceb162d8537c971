"""Three changes to how Kopf 1.45 runs Sesame; the first two measured with `make bench` (see the README).

1. The index readiness barrier is quadratic; `apply_readiness_fix()` makes it linear.

With `@kopf.index` handlers, Kopf holds every object's handlers until every indexed object has been
indexed once. It tracks that with one toggle per object in a `ToggleSet`, and every toggle added
or dropped wakes *every* parked object worker (`Condition.notify_all`), each of which re-checks
the whole set. Starting with N indexed objects costs O(N²) wake-ups: measured here (`make bench`,
2 cores) 3 s at 1,000 Secrets, 13 s at 2,000, 67 s at 4,000 and more than 10 minutes at 20,000,
during which the operator creates no pod at all.

The result a waiter waits for (`set.is_on()`) can only change when a toggle is added or dropped,
and only if the result actually flips; so waking the waiters only then is equivalent, and makes
startup linear (10,000 Secrets: 12 s). Applied once at import, only to the Kopf release it was
written against; any other release is left untouched, and tests/unit/test_kopf_tuning.py fails
loudly until someone checks whether the upstream fix (patches/kopf-toggleset-wake-on-flip.patch)
landed. Only the readiness fix touches Kopf's private code.

2. `NoDiffBase`: Kopf deep-copies every object on every watch-event to detect changes for
`on.create/update/field/resume` handlers (its "diff base", `settings.persistence`). Sesame has
none of those — only `on.event`, indexes and the admission webhook — so the copy is never read:
about 12% of the operator's CPU in a TaskRun burst. tests/unit/test_kopf_tuning.py fails if a
change-detecting handler is ever registered, since it would then need the real diff base.

3. `narrow_watches`: Kopf filters handler labels on the client, so `@kopf.on.event(..., "pods",
labels=...)` alone would list and watch every pod of every served namespace (a whole cluster's
with --all-namespaces). The API server filters instead, on the label every TaskRun pod carries;
and initial listings come in chunks, so a large namespace is never one giant response in memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import kopf

from sesame import naming

logger = logging.getLogger("sesame.controller")

FOR_KOPF = ("1.45.2",)


@contextlib.asynccontextmanager
async def _waking_waiters_on_flip(toggle_set: Any) -> AsyncIterator[None]:
    """Change the set inside; wake its waiters only if `is_on()` flipped (all they wait for)."""
    async with toggle_set._condition:
        before = toggle_set.is_on()
        yield
        if toggle_set.is_on() != before:
            toggle_set._condition.notify_all()


async def _make_toggle(self: Any, __val: bool = False, *, name: str | None = None) -> Any:
    from kopf._cogs.aiokits.aiotoggles import Toggle

    toggle = Toggle(__val, name=name, condition=self._condition)
    async with _waking_waiters_on_flip(self):
        self._toggles.add(toggle)
    return toggle


async def _drop_toggle(self: Any, toggle: Any) -> None:
    async with _waking_waiters_on_flip(self):
        self._toggles.discard(toggle)


async def _drop_toggles(self: Any, toggles: Any) -> None:
    async with _waking_waiters_on_flip(self):
        self._toggles.difference_update(toggles)


def apply_readiness_fix() -> bool:
    """Install the linear barrier into Kopf's ToggleSet; True when applied."""
    from kopf._cogs.aiokits import aiotoggles

    toggle_set: Any = aiotoggles.ToggleSet
    if toggle_set.make_toggle is _make_toggle:
        return True
    installed = version("kopf")
    if installed not in FOR_KOPF:
        logger.warning(
            "kopf %s: not applying Sesame's readiness fix (written for %s); startup with many "
            "Secrets may be slow",
            installed,
            ", ".join(FOR_KOPF),
        )
        return False
    toggle_set.make_toggle = _make_toggle
    toggle_set.drop_toggle = _drop_toggle
    toggle_set.drop_toggles = _drop_toggles
    return True


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that stores and copies nothing (for operators without change-detecting handlers)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


LIST_CHUNK_SIZE = 500


def narrow_watches(settings: kopf.OperatorSettings) -> None:
    """Only TaskRun pods reach the operator (server-side label selector); lists come in chunks."""
    settings.watching.label_selectors["", "v1", "pods"] = naming.TASKRUN_LABEL
    settings.watching.chunk_size = LIST_CHUNK_SIZE
