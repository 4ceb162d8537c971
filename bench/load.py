"""Sending creates: as fast as a fixed thread pool can, or at a fixed rate.

Every request records the monotonic time just before it was sent and just after its answer, so
latencies downstream (pod ADDED on the watch) are measured from the moment the client asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from sesame.kube.rest import JsonApi as Rest

CONCURRENCY = 16  # the same for the floor and the TaskRun burst


@dataclass(frozen=True)
class Job:
    key: tuple[str, str]  # (namespace, name) of the object the create leads to (a pod)
    path: str
    body: dict[str, Any]


@dataclass
class Sent:
    key: tuple[str, str]
    scheduled: float
    sent: float = 0.0
    done: float = 0.0
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.done - self.sent


def _send(rest: Rest, job: Job, record: Sent) -> Sent:
    record.sent = time.monotonic()
    try:
        rest.create(job.path, job.body)
    except ApiException as error:
        record.error = f"{error.status} {error.reason}"
    except Exception as error:
        record.error = type(error).__name__
    record.done = time.monotonic()
    return record


def burst(rest: Rest, jobs: Sequence[Job], concurrency: int = CONCURRENCY) -> list[Sent]:
    """Every job through `concurrency` threads, as fast as they go."""
    start = time.monotonic()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="burst") as pool:
        return list(pool.map(lambda job: _send(rest, job, Sent(job.key, start)), jobs))


def paced(rest: Rest, jobs: Sequence[Job], rate: float, concurrency: int = CONCURRENCY) -> list[Sent]:
    """Job i is sent at start + i/rate, through a pool so that one slow answer delays no other send."""
    records = [Sent(job.key, 0.0) for job in jobs]
    start = time.monotonic() + 0.05
    with ThreadPoolExecutor(concurrency, thread_name_prefix="paced") as pool:
        for index, (job, record) in enumerate(zip(jobs, records, strict=True)):
            record.scheduled = start + index / rate
            delay = record.scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(_send, rest, job, record)
    return records


class Sampler:
    """Calls `sample()` every `interval` seconds in a thread until stopped."""

    def __init__(self, sample: Callable[[float], None], interval: float = 1.0) -> None:
        self.sample = sample
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample(time.monotonic())

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()
