"""A keyed work queue in the shape controller-runtime made the norm (client-go's `workqueue`).

Every watch-event that concerns a TaskRun adds that TaskRun's key; the queue guarantees:

- de-duplication: a key waiting in the queue is there once, however many events added it;
- one worker per key: a key being processed is not handed out again; an add meanwhile marks it
  dirty, and it is queued again when its worker is done (so the newest state is always seen);
- per-key backoff: `retry` re-adds a key after 0.5 s, 1 s, 2 s, … up to 30 s, until `forget`;
- delayed adds: `add_after` for work that must wait (e.g. a pod that is still being deleted).

Single-threaded: every method runs on the operator's event loop (no locks needed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self, backoff_base: float = BACKOFF_BASE, backoff_max: float = BACKOFF_MAX) -> None:
        self._ready: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max

    def add(self, key: Key) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Add `key` after `delay` seconds (the earliest of several pending delays wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: Key) -> float:
        """Re-add after this key's next backoff delay; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self.backoff_max, self.backoff_base * 2.0**failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        """The key succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> Key:
        key = await self._ready.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Key) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def drop(self, key: Key) -> None:
        """Forget everything about a key whose object is gone."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def busy(self) -> int:
        return len(self._processing)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
