"""Prometheus metrics of the operator. Labels are bounded enums: never a key, a name or a value."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

TASKRUNS_FINISHED = Counter(
    "sesame_taskruns_finished_total", "TaskRuns that reached a terminal phase", ["phase", "reason"]
)
PODS_CREATED = Counter("sesame_taskrun_pods_created_total", "Pods created for TaskRuns")
INJECTION_PROBLEMS = Counter(
    "sesame_injection_problems_total", "Requests that could not be met, by reason", ["reason", "source"]
)
CREATE_TO_POD = Histogram(
    "sesame_taskrun_create_to_pod_seconds",
    "Time from TaskRun creation to its pod's creation (1 s resolution of creationTimestamp)",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
WEBHOOK_ADMISSIONS = Counter(
    "sesame_webhook_admissions_total", "Pod admissions handled by the webhook", ["result"]
)
WEBHOOK_LATENCY = Histogram(
    "sesame_webhook_admission_seconds",
    "Time the webhook spent on one admission",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
WAITING_TASKRUNS = Gauge("sesame_taskruns_waiting_for_secrets", "TaskRuns held back by a missing secret")

HANDLER_BACKLOG = Gauge(
    "sesame_handler_backlog",
    "Handler calls queued for a free worker thread: Kopf's backlog (grows when every worker is busy)",
)
HANDLER_WORKERS = Gauge("sesame_handler_workers", "Worker threads that run handlers (SESAME_WORKERS)")


def observe_runtime(executor: object, waiting: Callable[[], int]) -> None:
    """Gauges computed at scrape time: Kopf's handler backlog and the TaskRuns waiting for a secret.

    Kopf runs every sync handler through `settings.execution.executor` (a ThreadPoolExecutor), so
    the calls queued in front of it are the watch-events Kopf has received but not yet handled.
    """
    queue = getattr(executor, "_work_queue", None)
    HANDLER_BACKLOG.set_function(lambda: float(queue.qsize()) if queue is not None else 0.0)
    HANDLER_WORKERS.set_function(lambda: float(getattr(executor, "_max_workers", 0)))
    WAITING_TASKRUNS.set_function(lambda: float(waiting()))


def observe_pod_created(creation_timestamp: str | None) -> None:
    PODS_CREATED.inc()
    if not creation_timestamp:
        return
    created = datetime.datetime.fromisoformat(creation_timestamp.replace("Z", "+00:00"))
    CREATE_TO_POD.observe(max(0.0, (datetime.datetime.now(datetime.UTC) - created).total_seconds()))
