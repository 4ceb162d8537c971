"""The controller's work queue: de-duplication, one worker per key, backoff, delayed adds."""

from __future__ import annotations

import asyncio

import pytest

from sesame.controller.queue import WorkQueue

A, B = ("ns", "a"), ("ns", "b")


def test_a_key_added_many_times_is_handed_out_once() -> None:
    async def scenario() -> list[tuple[str, str]]:
        queue = WorkQueue()
        for key in (A, B, A, A, B):
            queue.add(key)
        assert len(queue) == 2
        return [await queue.get(), await queue.get()]

    assert asyncio.run(scenario()) == [A, B]


def test_a_key_in_progress_is_not_handed_out_again_but_comes_back_when_done() -> None:
    async def scenario() -> list[object]:
        queue = WorkQueue()
        queue.add(A)
        first = await queue.get()
        queue.add(A)  # a watch-event while a worker reconciles A
        queue.add(A)
        waiting = [len(queue), queue.busy]
        try:
            await asyncio.wait_for(queue.get(), 0.05)
            handed_twice = True
        except TimeoutError:
            handed_twice = False
        queue.done(first)
        again = await asyncio.wait_for(queue.get(), 0.05)
        return [first, waiting, handed_twice, again, len(queue)]

    assert asyncio.run(scenario()) == [A, [0, 1], False, A, 0]


def test_retries_back_off_per_key_and_forget_starts_afresh() -> None:
    async def scenario() -> list[float]:
        queue = WorkQueue(backoff_base=0.01, backoff_max=0.04)
        delays = [queue.retry(A) for _ in range(4)]
        delays.append(queue.retry(B))
        queue.forget(A)
        delays.append(queue.retry(A))
        queue.close()
        return delays

    assert asyncio.run(scenario()) == [0.01, 0.02, 0.04, 0.04, 0.01, 0.01]


def test_add_after_fires_once_at_the_earliest_requested_time() -> None:
    async def scenario() -> list[object]:
        queue = WorkQueue()
        loop = asyncio.get_running_loop()
        start = loop.time()
        queue.add_after(A, 0.2)
        queue.add_after(A, 0.05)  # earlier wins
        queue.add_after(A, 0.3)  # later is ignored
        key = await asyncio.wait_for(queue.get(), 1)
        elapsed = loop.time() - start
        queue.done(key)
        await asyncio.sleep(0.3)
        return [key, 0.04 <= elapsed < 0.2, len(queue)]

    assert asyncio.run(scenario()) == [A, True, 0]


def test_drop_cancels_a_pending_delayed_add() -> None:
    async def scenario() -> int:
        queue = WorkQueue()
        queue.add_after(A, 0.02)
        queue.drop(A)
        await asyncio.sleep(0.05)
        return len(queue)

    assert asyncio.run(scenario()) == 0


def test_the_longest_retry_wait_comes_from_the_operators_configuration() -> None:
    from sesame.config import ConfigError, OperatorConfig

    assert OperatorConfig.from_env({}).retry_max_seconds == 30
    assert OperatorConfig.from_env({"SESAME_RETRY_MAX_SECONDS": "2"}).retry_max_seconds == 2
    with pytest.raises(ConfigError, match="SESAME_RETRY_MAX_SECONDS"):
        OperatorConfig.from_env({"SESAME_RETRY_MAX_SECONDS": "0"})

    async def delays() -> list[float]:
        queue = WorkQueue(backoff_max=2)
        found = [queue.retry(A) for _ in range(6)]
        queue.drop(A)
        return found

    assert asyncio.run(delays()) == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
