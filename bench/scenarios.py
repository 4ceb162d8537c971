"""The measured parts of one benchmark run: floor, TaskRun burst, sustained rate, webhook, scale.

Each returns a plain dict for results.json. Times are seconds from time.monotonic().
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench import apiserver_metrics, load, workload
from bench.operator_process import OperatorProcess, usage
from bench.stats import slope, summary
from bench.target import ROOT, Target
from bench.watch import PodWatch
from sesame.controller import status
from sesame.controller.pods import build_pod
from sesame.injection import deliveries as deliveries_of
from sesame.kube.rest import JsonApi, pods_path, secrets_path, taskruns_path
from sesame.requests import parse_requests

NAMESPACES = "/api/v1/namespaces"

READY_TIMEOUT = 240.0  # seconds for an operator to start with the scale part's 10,000 Secrets
OPERATOR_RESOURCES = frozenset({"pods", "taskruns", "taskruns/status", "events", "secrets"})


@dataclass
class Bench:
    target: Target
    prefix: str
    log: Callable[[str], None]
    api: client.ApiClient = field(init=False)
    rest: JsonApi = field(init=False)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api = self.target.api(pool=2 * load.CONCURRENCY)
        self.rest = JsonApi(self.api, timeout=60)

    def namespace(self, suffix: str, secret_sets: int = 1) -> str:
        """A fresh namespace holding `secret_sets` × the workload's 3 Secrets."""
        name = f"{self.prefix}-{suffix}"
        self.rest.request("POST", NAMESPACES, {"metadata": {"name": name}}, parse=False)
        self.namespaces.append(name)
        for index in range(secret_sets):
            for secret in workload.secrets(secret_keys(index)):
                self.rest.create(secrets_path(name), secret)
        return name

    def operator(self, scope: list[str], env: dict[str, str] | None = None) -> OperatorProcess:
        operator = OperatorProcess(self.target.kubeconfig, scope, env or {}).start()
        self.log(f"operator started (pid {operator.pid}): {' '.join(scope)}")
        return operator

    def wait_ready(self, operator: OperatorProcess, namespace: str, timeout: float = 60) -> float:
        """Until a probe TaskRun in `namespace` has its pod; returns the seconds it took."""
        started = time.monotonic()
        name = f"probe-{int(started * 1000) % 1_000_000}"
        self.rest.create(taskruns_path(namespace), workload.taskrun(name))
        while time.monotonic() - started < timeout:
            if not operator.alive():
                raise RuntimeError(f"the operator exited early; its log:\n{operator.log_tail()}")
            try:
                self.rest.request("GET", f"{pods_path(namespace)}/{name}", parse=False)
                self.log(f"operator ready: probe TaskRun podded after {time.monotonic() - started:.1f}s")
                return time.monotonic() - started
            except ApiException as error:
                if error.status != 404:
                    raise
            time.sleep(0.1)
        raise RuntimeError(f"the operator made no pod within {timeout:.0f}s; its log:\n{operator.log_tail()}")

    def plane_cpu(self) -> float | None:
        """CPU-seconds used so far by our own kube-apiserver and etcd (None on a cluster we do not own)."""
        if not self.target.pids:
            return None
        return sum(usage(self.target.pids[c]).cpu_seconds for c in ("kube-apiserver", "etcd"))

    def scrape(self) -> Any:
        return apiserver_metrics.scrape(self.api)

    def delete_webhook_configuration(self, name: str) -> None:
        path = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
        with contextlib.suppress(ApiException):
            self.rest.request("DELETE", path, parse=False)

    def cleanup(self) -> None:
        """Delete what this run created (the namespace controller does the rest, in the background)."""
        for name in self.namespaces:
            with contextlib.suppress(ApiException):
                self.rest.request("DELETE", f"{NAMESPACES}/{name}", parse=False)

    def close(self) -> None:
        self.api.close()


def secret_keys(index: int) -> tuple[str, str, str]:
    if index == 0:
        return workload.SECRET_KEYS
    return (f"bench_token_{index}", f"bench_api_key_{index}", f"db-creds-{index}")


@contextlib.contextmanager
def watching(bench: Bench, namespace: str | None) -> Iterator[PodWatch]:
    watch = PodWatch(bench.api, namespace).start()
    try:
        yield watch
    finally:
        watch.stop()


def _latencies(records: list[load.Sent], watch: PodWatch) -> list[float]:
    return [watch.added[r.key] - r.sent for r in records if r.key in watch.added]


def _errors(records: list[load.Sent]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for record in records:
        if record.error:
            errors[record.error] = errors.get(record.error, 0) + 1
    return errors


def _timeline(records: list[load.Sent], watch: PodWatch) -> dict[str, Any]:
    """When everything was sent, answered and visible as a pod, from the first send."""
    start = min(r.sent for r in records)
    seen = [watch.added[r.key] for r in records if r.key in watch.added]
    return {
        "all_sent_s": max(r.sent for r in records) - start,
        "all_created_s": max(r.done for r in records) - start,
        "all_pods_s": (max(seen) - start) if len(seen) == len(records) else None,
        "pods": len(seen),
        "errors": _errors(records),
    }


def floor(bench: Bench, n: int, concurrency: int) -> dict[str, Any]:
    """N pods created directly, already carrying what Sesame would inject."""
    namespace = bench.namespace("floor")
    spec = workload.injected_pod_spec(namespace)
    jobs = [
        load.Job((namespace, f"floor-{i}"), pods_path(namespace), workload.floor_pod(f"floor-{i}", spec))
        for i in range(n)
    ]
    plane_before = bench.plane_cpu()
    with watching(bench, namespace) as watch:
        records = load.burst(bench.rest, jobs, concurrency)
        watch.wait_for({job.key for job in jobs}, timeout=60)
    bench.log(f"floor: {watch.count(namespace)}/{n} pods")
    return {
        **_plane_cost(bench, plane_before, n),
        "n": n,
        "concurrency": concurrency,
        "create_latency": summary([r.latency for r in records if not r.error]),
        "create_to_pod": summary(_latencies(records, watch)),
        **_timeline(records, watch),
        "_samples": _latencies(records, watch),
    }


def _plane_cost(bench: Bench, before: float | None, n: int) -> dict[str, Any]:
    """kube-apiserver + etcd CPU for the part (until now), per object: what the cluster spends."""
    after = bench.plane_cpu()
    if before is None or after is None:
        return {}
    return {"plane_cpu_s": after - before, "plane_cpu_ms_per_object": 1000 * (after - before) / n}


def _api_cost(before: Any, after: Any, n: int, own: dict[str, int]) -> dict[str, Any]:
    """The operator's API requests per TaskRun: everything on its resources minus the client's own."""
    delta = apiserver_metrics.diff(after, before)
    for label, count in own.items():
        verb, resource = label.split(" ", 1)
        delta[apiserver_metrics.Key(verb, resource)] -= count
    requests = {k: v for k, v in apiserver_metrics.by_verb_resource(delta, OPERATOR_RESOURCES).items() if v}
    writes = sum(
        count for label, count in requests.items() if label.split(" ", 1)[0] in apiserver_metrics.WRITE_VERBS
    )
    reads = sum(count for label, count in requests.items() if label.split(" ", 1)[0] in {"GET", "LIST"})
    return {
        "requests": requests,
        "writes_per_taskrun": writes / n if n else None,
        "reads_per_taskrun": reads / n if n else None,
    }


def taskrun_burst(
    bench: Bench, operator: OperatorProcess, namespace: str, n: int, concurrency: int
) -> dict[str, Any]:
    """N TaskRuns created as fast as the client can; create→pod measured on a pod watch."""
    jobs = [
        load.Job((namespace, f"tr-{i}"), taskruns_path(namespace), workload.taskrun(f"tr-{i}"))
        for i in range(n)
    ]
    operator.wait_settled()
    cpu_before = operator.usage().cpu_seconds
    api_before = bench.scrape()
    plane_before = bench.plane_cpu()
    with watching(bench, namespace) as watch:
        records = load.burst(bench.rest, jobs, concurrency)
        watch.wait_for({job.key for job in jobs}, timeout=max(120.0, n * 0.2))
    bench.log(f"burst: {watch.count(namespace)}/{n} pods; waiting for the operator to settle")
    operator.wait_settled()  # status patches and events follow the pods
    cpu = operator.usage().cpu_seconds - cpu_before
    api = _api_cost(api_before, bench.scrape(), n, {"POST taskruns": n})
    return {
        **_plane_cost(bench, plane_before, n),
        "n": n,
        "concurrency": concurrency,
        "create_latency": summary([r.latency for r in records if not r.error]),
        "create_to_pod": summary(_latencies(records, watch)),
        **_timeline(records, watch),
        "operator_cpu_s": cpu,
        "operator_cpu_ms_per_taskrun": 1000 * cpu / n,
        **api,
        "_samples": _latencies(records, watch),
    }


def sustained(
    bench: Bench, operator: OperatorProcess, namespace: str, rate: float, duration: float
) -> dict[str, Any]:
    """A fixed rate of TaskRuns; does the operator keep up (pods outstanding over time)?"""
    n = max(1, int(rate * duration))
    jobs = [
        load.Job((namespace, f"s-{i}"), taskruns_path(namespace), workload.taskrun(f"s-{i}"))
        for i in range(n)
    ]
    operator.wait_settled()
    cpu_before = operator.usage().cpu_seconds
    api_before = bench.scrape()
    lag: list[tuple[float, int]] = []
    holder: dict[str, list[load.Sent]] = {}
    with watching(bench, namespace) as watch:
        start = time.monotonic()

        def sample(now: float) -> None:
            records = holder.get("records")
            answered = sum(1 for r in records if r.done) if records else int((now - start) * rate)
            lag.append((now - start, max(0, min(answered, n) - watch.count(namespace))))

        with load.Sampler(sample, interval=1.0):
            holder["records"] = records = load.paced(bench.rest, jobs, rate)
            window_end = time.monotonic()
            outstanding_at_end = n - watch.count(namespace)
            drained = watch.wait_for({job.key for job in jobs}, timeout=120)
            drain_s = time.monotonic() - window_end
    bench.log(f"sustained: {watch.count(namespace)}/{n} pods, {outstanding_at_end} outstanding at the end")
    operator.wait_settled()
    cpu = operator.usage().cpu_seconds - cpu_before
    api = _api_cost(api_before, bench.scrape(), n, {"POST taskruns": n})
    in_window = [(t, float(v)) for t, v in lag if t <= duration]
    late = [r.sent - r.scheduled for r in records]
    return {
        "rate": rate,
        "duration_s": duration,
        "n": n,
        "create_to_pod": summary(_latencies(records, watch)),
        "client_send_lag": summary(late),
        "outstanding_at_end": outstanding_at_end,
        "outstanding_max": max((v for _, v in lag), default=0),
        "lag_trend_per_s": slope(in_window[len(in_window) // 2 :]),
        "drain_s": drain_s if drained else None,
        "kept_up": drained and outstanding_at_end <= rate,
        "lag_samples": lag,
        "operator_cpu_s": cpu,
        "operator_cpu_utilisation": cpu / (time.monotonic() - start),
        **api,
        "errors": _errors(records),
        "_samples": _latencies(records, watch),
    }


def webhook_missing() -> str | None:
    """Why the webhook part cannot run yet: the module is not in git (another engineer writes it)."""
    directory = ROOT / "operator" / "sesame" / "webhook"
    try:
        tracked = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "operator/sesame/webhook"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = [str(p.relative_to(ROOT)) for p in directory.glob("*.py")]
    if not any((ROOT / path).stat().st_size > 0 for path in tracked if (ROOT / path).exists()):
        return "the webhook module (operator/sesame/webhook) has no code in git yet"
    return None


def _mutated(pod: dict[str, Any]) -> bool:
    env = pod.get("spec", {}).get("containers", [{}])[0].get("env") or []
    return any((e.get("valueFrom") or {}).get("secretKeyRef") for e in env)


def webhook(bench: Bench, namespace: str, pairs: int) -> dict[str, Any]:
    """Labelled pods (the webhook injects) vs unlabelled pre-injected pods, alternating, one at a time."""
    spec = workload.injected_pod_spec(namespace)
    path = pods_path(namespace)
    deadline = time.monotonic() + 60
    attempt = 0
    while True:  # the webhook configuration may take a moment to be registered and served
        attempt += 1
        name = f"warm-{attempt}"
        try:
            created = bench.rest.request("POST", path, workload.webhook_pod(name))
            if _mutated(created):
                break
        except ApiException as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the webhook refused the benchmark's pod: {error.body}") from error
        if time.monotonic() > deadline:
            raise RuntimeError("the webhook did not mutate a labelled pod within 60s")
        time.sleep(0.5)
    for i in range(20):  # warm both paths (connections, caches)
        bench.rest.create(path, workload.webhook_pod(f"warm-l-{i}"))
        bench.rest.create(path, workload.floor_pod(f"warm-u-{i}", spec))
    labelled: list[float] = []
    unlabelled: list[float] = []
    for i in range(pairs):
        for samples, body in (
            (labelled, workload.webhook_pod(f"l-{i}")),
            (unlabelled, workload.floor_pod(f"u-{i}", spec)),
        ):
            sent = time.monotonic()
            bench.rest.create(path, body)
            samples.append(time.monotonic() - sent)
    with_webhook, without = summary(labelled), summary(unlabelled)

    def added(q: str) -> float | None:
        a, b = with_webhook[q], without[q]
        return None if a is None or b is None else a - b

    return {
        "pairs": pairs,
        "labelled": with_webhook,
        "unlabelled": without,
        "added_p50_s": added("p50"),
        "added_p99_s": added("p99"),
        "_samples": {"labelled": labelled, "unlabelled": unlabelled},
    }


def clear(bench: Bench, timeout: float = 300) -> float | None:
    """Delete this run's namespaces so far and wait until they are gone; seconds taken, None on timeout."""
    started = time.monotonic()
    names = list(bench.namespaces)
    bench.cleanup()
    bench.namespaces.clear()
    pending = set(names)
    while pending and time.monotonic() - started < timeout:
        for name in list(pending):
            try:
                bench.rest.request("GET", f"{NAMESPACES}/{name}", parse=False)
            except ApiException as error:
                if error.status == 404:
                    pending.discard(name)
        if pending:
            time.sleep(1)
    return None if pending else time.monotonic() - started


def scale(bench: Bench, namespaces: int, per_namespace: int, concurrency: int) -> dict[str, Any]:
    """`namespaces` × (`per_namespace` Secrets + `per_namespace` TaskRuns) under one operator.

    On our own control plane the operator runs as the Helm chart's default does, `--all-namespaces`,
    after the earlier parts' namespaces are deleted (so it holds only this part's objects); on a
    shared cluster it gets the exact namespaces instead, so it touches nothing else.
    """
    result: dict[str, Any] = {}
    sets = per_namespace // 3
    names = [f"{bench.prefix}-scale-{i:03d}" for i in range(namespaces)]
    if bench.target.owned:
        bench.log("scale: deleting the earlier parts' namespaces first")
        result["cleared_earlier_namespaces_s"] = clear(bench)
        scope = ["--all-namespaces"]
    else:
        scope = [flag for name in names for flag in ("--namespace", name)]
    scope_label = scope[0] if bench.target.owned else f"--namespace × {len(names)}"
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="scale") as pool:
        list(
            pool.map(
                lambda name: bench.rest.request("POST", NAMESPACES, {"metadata": {"name": name}}),
                names,
            )
        )
    bench.namespaces.extend(names)
    secret_jobs = [
        load.Job((ns, ""), secrets_path(ns), secret)
        for ns in names
        for index in range(sets)
        for secret in workload.secrets(secret_keys(index))
    ]
    for ns in names:  # pad to exactly `per_namespace` Secrets per namespace with unrelated ones
        for extra in range(per_namespace - 3 * sets):
            secret_jobs.append(
                load.Job((ns, ""), secrets_path(ns), {"metadata": {"name": f"extra-{extra}"}, "data": {}})
            )
    secret_records = load.burst(bench.rest, secret_jobs, concurrency)
    objects_s = time.monotonic() - started
    bench.log(
        f"scale: {len(names)} namespaces and {len(secret_jobs)} Secrets in {objects_s:.0f}s"
        f" (errors: {_errors(secret_records) or 'none'})"
    )
    operator = bench.operator(scope)
    try:
        try:
            ready_s = bench.wait_ready(operator, names[0], timeout=READY_TIMEOUT)
        except RuntimeError:
            usage = operator.usage()
            bench.log(f"scale: the operator was not ready within {READY_TIMEOUT:.0f}s; skipping the TaskRuns")
            return {
                **result,
                "namespaces": namespaces,
                "secrets": len(secret_jobs),
                "scope": scope_label,
                "operator_ready_s": None,
                "skipped": f"operator not ready within {READY_TIMEOUT:.0f}s of starting with "
                f"{len(secret_jobs)} Secrets (cpu {usage.cpu_seconds:.0f}s, rss {usage.rss_mib:.0f} MiB)",
                "rss_after_mib": None,
            }
        operator.wait_settled(quiet_seconds=2.0, timeout=60)
        idle = operator.usage()
        jobs = [
            load.Job(
                (ns, f"tr-{i}"),
                taskruns_path(ns),
                workload.taskrun(f"tr-{i}", secret_keys(i % sets)),
            )
            for i in range(per_namespace)
            for ns in names
        ]
        cpu_before = operator.usage().cpu_seconds
        with watching(bench, None) as watch:
            records = load.burst(bench.rest, jobs, concurrency)
            done = watch.wait_for({job.key for job in jobs}, timeout=600)
        bench.log(f"scale: {sum(1 for j in jobs if j.key in watch.added)}/{len(jobs)} TaskRuns have pods")
        operator.wait_settled(quiet_seconds=2.0, timeout=120)
        after = operator.usage()
        return {
            **result,
            "namespaces": namespaces,
            "secrets": len(secret_jobs),
            "taskruns": len(jobs),
            "scope": scope_label,
            "objects_created_s": objects_s,
            "secret_errors": _errors(secret_records),
            "operator_ready_s": ready_s,
            "rss_idle_with_secrets_mib": idle.rss_mib,
            "rss_after_mib": after.rss_mib,
            "peak_rss_mib": after.peak_rss_mib,
            "all_podded": done,
            "create_to_pod": summary(_latencies(records, watch)),
            **_timeline(records, watch),
            "operator_cpu_ms_per_taskrun": 1000 * (after.cpu_seconds - cpu_before) / len(jobs),
        }
    finally:
        operator.stop()


def operator_floor(bench: Bench, n: int, concurrency: int) -> dict[str, Any]:
    """What a zero-cost operator would cost: per TaskRun, the client itself creates the TaskRun,
    its pre-injected pod (owned by it, as Sesame's) and writes its status once. The burst's ratio
    to this is the honest measure of what the operator adds."""
    namespace = bench.namespace("opfloor")
    spec = workload.injected_pod_spec(namespace)
    deliveries = deliveries_of(parse_requests(workload.secret_requests()))
    at = status.now()

    def one(index: int) -> load.Sent:
        record = load.Sent((namespace, f"z-{index}"), time.monotonic(), time.monotonic())
        try:
            taskrun = bench.rest.request("POST", taskruns_path(namespace), workload.taskrun(f"z-{index}"))
            bench.rest.create(pods_path(namespace), build_pod(taskrun, spec, deliveries))
            situation = status.Situation(
                "Pending",
                "PodPending",
                "the pod is waiting to start",
                status.Cond(True, "SecretsFound", status.ALL_SECRETS_READY),
                status.Cond(True, "PodCreated", f"pod 'z-{index}' created"),
                status.Cond(None, "NotStarted", "the pod is waiting to start"),
                pod_name=f"z-{index}",
                deliveries=[d.to_status() for d in deliveries],
            )
            path = taskruns_path(namespace, f"z-{index}") + "/status"
            bench.rest.merge_patch(path, {"status": status.build(None, situation, 1, at)})
        except ApiException as error:
            record.error = f"HTTP {error.status}"
        record.done = time.monotonic()
        return record

    plane_before = bench.plane_cpu()
    with watching(bench, namespace) as watch:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            records = list(pool.map(one, range(n)))
        watch.wait_for({r.key for r in records}, timeout=120)
    bench.log(f"operator floor: {watch.count(namespace)}/{n} pods")
    return {
        **_plane_cost(bench, plane_before, n),
        "n": n,
        "concurrency": concurrency,
        "create_to_pod": summary(_latencies(records, watch)),
        **_timeline(records, watch),
        "_samples": _latencies(records, watch),
    }


def node_runs(bench: Bench, operator: OperatorProcess, namespace: str, runs: int) -> dict[str, Any]:
    """Trivial tasks run for real on the node, one at a time: TaskRun create → its pod → the
    container started (kubelet) → Succeeded in the TaskRun's status (operator, from the kubelet)."""
    pod_s: list[float] = []
    started_s: list[float] = []
    succeeded_s: list[float] = []
    for index in range(runs):
        name = f"node-{index}"
        sent = time.monotonic()
        bench.rest.create(taskruns_path(namespace), workload.taskrun(name, run=True))
        seen: dict[str, float] = {}
        deadline = sent + 120
        while "succeeded" not in seen and time.monotonic() < deadline:
            now = time.monotonic()
            with contextlib.suppress(ApiException):
                pod = bench.rest.get(pods_path(namespace, name))
                seen.setdefault("pod", now)
                statuses = (pod.get("status") or {}).get("containerStatuses") or []
                if any(
                    (s.get("state") or {}).get("running") or (s.get("state") or {}).get("terminated")
                    for s in statuses
                ):
                    seen.setdefault("started", now)
            with contextlib.suppress(ApiException):
                if (bench.rest.get(taskruns_path(namespace, name)).get("status") or {}).get(
                    "phase"
                ) == "Succeeded":
                    seen["succeeded"] = now
            time.sleep(0.05)
        if not operator.alive():
            raise RuntimeError(f"the operator exited; its log:\n{operator.log_tail()}")
        if "succeeded" not in seen:
            raise RuntimeError(f"TaskRun {name} did not succeed within 120 s")
        pod_s.append(seen["pod"] - sent)
        started_s.append(seen.get("started", seen["succeeded"]) - sent)
        succeeded_s.append(seen["succeeded"] - sent)
    bench.log(f"node: {runs} trivial tasks ran, p50 create→Succeeded {summary(succeeded_s)['p50']:.2f}s")
    return {
        "runs": runs,
        "create_to_pod": summary(pod_s),
        "create_to_container_started": summary(started_s),
        "create_to_succeeded": summary(succeeded_s),
    }
