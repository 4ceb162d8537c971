"""Prometheus metrics of the operator. Labels are bounded enums: never a key, a name or a value."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

TASKRUNS_FINISHED = Counter(
    "sesame_taskruns_finished_total", "TaskRuns that reached a terminal phase", ["phase", "reason"]
)
FORGED_PODS = Counter(
    "sesame_forged_pods_total", "Pods that carried a TaskRun's label without being its pod (ignored)"
)
# The `reason` label of sesame_taskruns_finished_total: pod and container reasons are free text
# that anyone who can create a pod may set, so anything outside this set counts as "Other".
FINISHED_REASONS = frozenset(
    {
        "Completed", "Error", "OOMKilled", "ContainerCannotRun", "DeadlineExceeded", "Evicted",
        "PodDeleted", "PodFailed", "PodInvalid", "Forbidden", "NamespaceNotAllowed", "InvalidRequest",
        "EnvVarClash", "UnknownContainer", "MountPathClash", "DirectSecretReference",
    }
)  # fmt: skip


def bounded_reason(reason: object) -> str:
    return str(reason) if reason in FINISHED_REASONS else "Other"


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

QUEUE_DEPTH = Gauge("sesame_work_queue_depth", "TaskRuns waiting in the work queue for a reconcile")
QUEUE_BUSY = Gauge("sesame_work_queue_busy", "TaskRuns being reconciled right now")
WORKERS = Gauge("sesame_workers", "Reconcile workers (SESAME_WORKERS)")


def observe_runtime(
    depth: Callable[[], int], busy: Callable[[], int], waiting: Callable[[], int], workers: int
) -> None:
    """Gauges computed at scrape time: the work queue and the TaskRuns waiting for a secret."""
    QUEUE_DEPTH.set_function(lambda: float(depth()))
    QUEUE_BUSY.set_function(lambda: float(busy()))
    WAITING_TASKRUNS.set_function(lambda: float(waiting()))
    WORKERS.set(workers)


def observe_pod_created(creation_timestamp: str | None) -> None:
    PODS_CREATED.inc()
    if not creation_timestamp:
        return
    created = datetime.datetime.fromisoformat(creation_timestamp.replace("Z", "+00:00"))
    CREATE_TO_POD.observe(max(0.0, (datetime.datetime.now(datetime.UTC) - created).total_seconds()))
