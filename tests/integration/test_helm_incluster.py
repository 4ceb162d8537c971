"""`helm install` for real: the chart as shipped runs the operator image built here on the local
node, and everything is checked through that running pod only (no operator in this process).

Three stories, each installing once and checking many things, to keep the suite's time in check:

- the default install: rollout; CLI-made secrets → a TaskRun whose pod reads every delivery form
  through the SDK → Succeeded; labelled pods through the webhook (the API server calling the
  operator's Service) → injected and running, or denied with Sesame's message; JSON logs without
  a secret; metrics through the Service; the NetworkPolicy; a second all-namespaces release refused;
  `helm upgrade` to a new image tag while TaskRuns are created; a hung operator restarted by its
  liveness probe; `helm uninstall` leaving nothing behind but the CRD.
- non-default values together: a namespace list, two replicas (the standby takes over when the
  leader's pod is deleted, no TaskRun lost or doubled), the webhook off, JSON logs, another metrics
  port, the NetworkPolicy off, a namespace template that needs `--set-literal`.
- bad input: a missing CRD, cert-manager values without cert-manager, a namespace that does not
  exist, a wrong image: one line from `helm install`, nothing left behind.

The image is built from this tree by tools/images.py (cached until the code changes) and imported
into the running node; the node is the project's own (`local_plane`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import images
import localnode
from sesame import naming
from tests.integration.test_chart import assert_no_refusals
from tests.support import leaks
from tests.support.cluster import TASK_IMAGE, Cluster, eventually, install_crds
from tests.unit.test_chart_rbac import CHART
from tests.unit.test_dockerfile import dockerfile_python, env_of, final_stage

pytestmark = pytest.mark.local_plane  # images are imported into the project's own node

SESAME = str(Path(sys.executable).parent / "sesame")
UPGRADE_TAG = f"{images.project_version()}-upgrade"
READY_TIMEOUT = "180s"
# Every object a release makes carries app.kubernetes.io/instance=<release>.
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,configmaps,serviceaccounts,networkpolicies,roles,"
    "rolebindings,poddisruptionbudgets,kopfpeerings.kopf.dev"
)
CLUSTER_KINDS = "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,clusterkopfpeerings.kopf.dev"

# Runs in the task image: reads every requested secret through the SDK, compares its SHA-256 with
# the expected one (never a value in the pod spec or its output), and says which form it came in.
VERIFY = """
import hashlib, json, os, sys
import sesame
secrets = sesame.current_context().secrets
wrong = []
for key, (digest, kind) in sorted(json.loads(os.environ["EXPECTED"]).items()):
    value = secrets.get(key=key)
    if hashlib.sha256(value.encode()).hexdigest() != digest:
        wrong.append(key)
    if kind == "file" and secrets.get_secrets_file(key) != "/etc/sesame/secrets/" + key:
        wrong.append(key + " (path)")
    print("read", key, "from", kind, flush=True)
if wrong:
    sys.exit("mismatch: " + ", ".join(wrong))
print("every secret matches")
"""


# --- the release under test ------------------------------------------------------------------------


def run(cluster: Cluster, *command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        check=False,
        env=cluster.env(),
        timeout=timeout,
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """A refused `helm install`: one line of its own (Helm may add a hint about --debug after it)."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stderr
    assert lines[0].startswith("Error: INSTALLATION FAILED: "), result.stderr
    assert all("--debug" in line for line in lines[1:]), result.stderr
    return lines[0]


@dataclass
class Release:
    cluster: Cluster
    name: str
    namespace: str

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.cluster, self.cluster.helm(), *args)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.cluster, self.cluster.kubectl(), *args)

    def install(self, *args: str) -> float:
        """`helm install` + `kubectl rollout status`: the seconds until the operator is Ready."""
        started = time.monotonic()
        installed = self.helm(
            "install", self.name, str(CHART), "-n", self.namespace, "--create-namespace", *args
        )
        assert installed.returncode == 0, installed.stderr
        self.rollout()
        return time.monotonic() - started

    def upgrade(self, *args: str) -> None:
        upgraded = self.helm("upgrade", self.name, str(CHART), "-n", self.namespace, "--reuse-values", *args)
        assert upgraded.returncode == 0, upgraded.stderr
        self.rollout()

    def rollout(self) -> None:
        done = self.kubectl(
            "rollout", "status", f"deployment/{self.name}", "-n", self.namespace, f"--timeout={READY_TIMEOUT}"
        )
        assert done.returncode == 0, done.stdout + done.stderr + self.describe()

    def describe(self) -> str:
        return self.kubectl("describe", "pods", "-n", self.namespace, "-l", self.selector).stdout[-3000:]

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    def pods(self) -> list[dict[str, Any]]:
        """The operator's running (not terminating) pods."""
        found = self.cluster.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        pods = [self.cluster.api.sanitize_for_serialization(p) for p in found]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def logs(self, pod: str) -> str:
        result = self.kubectl("logs", pod, "-n", self.namespace)
        assert result.returncode == 0, result.stderr
        leaks.record(f"kubectl logs {self.namespace}/{pod}", result.stdout)
        return result.stdout

    def leftovers(self) -> list[str]:
        served = set(self.kubectl("api-resources", "-o", "name").stdout.split())
        names = []
        for kinds, scope in ((NAMESPACED_KINDS, ["-A"]), (CLUSTER_KINDS, [])):
            listed = self.kubectl(
                "get",
                ",".join(k for k in kinds.split(",") if k in served or "." not in k),
                *scope,
                "-l",
                self.selector,
                "-o",
                "name",
            )
            assert listed.returncode == 0, listed.stderr
            names += listed.stdout.split()
        releases = self.kubectl(
            "get", "secrets", "-n", self.namespace, "-l", f"owner=helm,name={self.name}", "-o", "name"
        )
        return names + releases.stdout.split()

    def uninstall_leaves_nothing(self) -> None:
        removed = self.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "120s")
        assert removed.returncode == 0, removed.stderr
        eventually(lambda: not self.leftovers(), timeout=60, what=f"nothing of release {self.name} left")
        # The CRD stays (as documented): TaskRuns outlive the operator.
        crd = self.kubectl("get", "crd", "taskruns.sesame.dev", "-o", "name")
        assert crd.stdout.strip() == "customresourcedefinition.apiextensions.k8s.io/taskruns.sesame.dev"


@pytest.fixture(scope="module")
def node_state(cluster: Cluster) -> Path:
    """The state directory of the local cluster (its kubeconfig lives there)."""
    return cluster.kubeconfig.parent


@pytest.fixture(scope="module")
def operator_archive() -> Path:
    """The chart's default image, built from this tree by tools/images.py (cached by content)."""
    return images.build(images.operator_recipe())


@pytest.fixture(scope="module")
def operator_image(node_state: Path, operator_archive: Path) -> str:
    """That image, imported into the running node."""
    images.load_into_node(node_state, operator_archive, images.OPERATOR_IMAGE)
    return images.OPERATOR_IMAGE


def test_the_built_image_is_configured_like_the_dockerfiles(operator_archive: Path) -> None:
    config = images.archive_config(operator_archive)
    final = dict(final_stage())
    assert config["Entrypoint"] == json.loads(final["ENTRYPOINT"])
    assert config["User"] == final["USER"]
    assert sorted(config["ExposedPorts"]) == sorted(f"{port}/tcp" for port in final["EXPOSE"].split())
    env = dict(entry.split("=", 1) for entry in config["Env"])
    docker_env = env_of(final_stage())
    assert env["PATH"].startswith(docker_env["PATH"].removesuffix("$PATH"))
    for name in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        assert env[name] == docker_env[name]
    assert config["Labels"]["org.opencontainers.image.version"] == images.project_version()


@pytest.fixture
def releases(cluster: Cluster) -> Iterator[list[Release]]:
    """Releases a test makes; whatever is still installed afterwards is removed, its namespace too."""
    made: list[Release] = []
    yield made
    for release in made:
        leaks.collect(cluster.api, release.namespace)
        release.helm("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "60s")
        cluster.delete_namespace(release.namespace)


def new_release(cluster: Cluster, made: list[Release]) -> Release:
    release = Release(cluster, unique("sesame"), unique("sesame-system"))
    made.append(release)
    return release


# --- TaskRuns and pods through the running operator -------------------------------------------------


def store(cluster: Cluster, namespace: str, values: dict[str, str], *where: str) -> None:
    """`sesame create secret` for each value, the value on stdin (as a pipe would give it)."""
    for key, value in values.items():
        scope = list(where) or ["--namespace", namespace]
        result = subprocess.run(
            [SESAME, "create", "secret", *scope, key],
            input=value.encode(),
            capture_output=True,
            env=cluster.env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()


def verifying_container(expected_json: str) -> dict[str, Any]:
    return {
        "name": "main",
        "image": TASK_IMAGE,
        "command": ["python3", "-c", VERIFY],
        "env": [{"name": "EXPECTED", "value": expected_json}],
    }


def taskrun(cluster: Cluster, namespace: str, name: str, requests: list[dict[str, Any]], check: str) -> None:
    cluster.create_taskrun(
        namespace,
        name,
        {"secrets": requests, "template": {"spec": {"containers": [verifying_container(check)]}}},
    )


def phase(cluster: Cluster, namespace: str, name: str) -> str:
    return str((cluster.taskrun(namespace, name).get("status") or {}).get("phase") or "")


def condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    conditions = (cluster.taskrun(namespace, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def succeeded(cluster: Cluster, namespace: str, names: Sequence[str], timeout: float = 120) -> None:
    """Every TaskRun Succeeded, each with exactly one pod, the one named after it and owned by it."""

    def done() -> bool:
        phases = {name: phase(cluster, namespace, name) for name in names}
        assert "Failed" not in phases.values(), phases
        return set(phases.values()) == {"Succeeded"}

    eventually(done, timeout=timeout, interval=0.5, what=f"TaskRuns {list(names)} Succeeded in {namespace}")
    for name in names:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"sesame.dev/taskrun={name}").items
        assert [p.metadata.name for p in pods] == [name], (
            f"TaskRun {name} has pods {[p.metadata.name for p in pods]}"
        )
        owner = cluster.taskrun(namespace, name)["metadata"]["uid"]
        assert [(o.uid, o.controller) for o in pods[0].metadata.owner_references] == [(owner, True)]
        assert condition(cluster, namespace, name, "SecretsReady").get("status") == "True"


def simple_taskrun(cluster: Cluster, namespace: str, name: str) -> None:
    """A TaskRun without secrets whose pod exits at once: for counting and failover."""
    cluster.create_taskrun(
        namespace,
        name,
        {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "main", "image": TASK_IMAGE, "command": ["python3", "-c", "pass"]}
                    ]
                }
            }
        },
    )


@contextlib.contextmanager
def creating_taskruns(
    cluster: Cluster, namespace: str, prefix: str, count: int, every: float
) -> Iterator[list[str]]:
    """Creates `count` TaskRuns, one every `every` seconds, in a thread while the block runs."""
    names: list[str] = []
    failures: list[BaseException] = []

    def create() -> None:
        try:
            for index in range(count):
                name = f"{prefix}-{index}"
                simple_taskrun(cluster, namespace, name)
                names.append(name)
                time.sleep(every)
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    thread = threading.Thread(target=create, name="taskrun-creator")
    thread.start()
    try:
        yield names
    finally:
        thread.join()
    assert not failures, failures


def labelled_pod(name: str, requests: list[dict[str, Any]], check: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"sesame.dev/inject": "true"},
            "annotations": {"sesame.dev/secrets": json.dumps(requests)},
        },
        "spec": {"restartPolicy": "Never", "containers": [verifying_container(check)]},
    }


def pod_phase(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.core.read_namespaced_pod(name, namespace).status.phase)


def json_log_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line[:200]}") from None
    assert all(isinstance(entry, dict) and "message" in entry for entry in parsed)
    return parsed


def metrics(cluster: Cluster, namespace: str, service: str, port: int) -> str:
    """/metrics through the Service, by the API server's service proxy."""
    path = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/metrics"
    scraped = run(cluster, cluster.kubectl(), "get", "--raw", path)
    assert scraped.returncode == 0, scraped.stderr
    return scraped.stdout


def total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry these labels, from Prometheus' text format."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    found = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric == name and wanted <= set(label_text.rstrip("}").split(",")):
            found += float(value)
    return found


# --- the operator's process on the node -------------------------------------------------------------


def container_processes(node_state: Path, pod: dict[str, Any]) -> list[int]:
    """Host PIDs of the operator container's processes, from its cgroup under the node's root."""
    cgroup_root = json.loads((node_state / "pids.json").read_text())["cgroup_root"].lstrip("/")
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    uid = pod["metadata"]["uid"]
    for hierarchy in localnode.cgroup_hierarchies():
        for procs in (hierarchy / cgroup_root).glob(f"kubepods*/**/pod{uid}/{container_id}/cgroup.procs"):
            pids = [int(pid) for pid in procs.read_text().split()]
            if pids:
                return pids
    raise AssertionError(f"no cgroup with processes for container {container_id} of pod {uid}")


def restarts(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["restartCount"])


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


# --- story 1: the chart as shipped --------------------------------------------------------------------


def test_default_install_serves_upgrades_heals_and_uninstalls(
    cluster: Cluster,
    operator_image: str,
    node_state: Path,
    releases: list[Release],
    namespace: str,
    canary: str,
) -> None:
    release = new_release(cluster, releases)
    seconds = release.install()  # no values at all: the chart as shipped
    print(f"helm install → operator Ready: {seconds:.1f}s")
    [pod] = release.pods()
    assert pod["spec"]["containers"][0]["image"] == operator_image
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # Inside: the Dockerfile's Python minor, its virtualenv, its user.
    inside = release.kubectl(
        "exec",
        pod["metadata"]["name"],
        "-n",
        release.namespace,
        "--",
        "python",
        "-c",
        "import os, sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}', sys.prefix, os.getuid())",
    )
    assert inside.stdout.split() == [dockerfile_python(), "/opt/sesame", "10001"], inside.stderr

    # Secrets stored with the CLI, one per delivery form, read by the task through the SDK.
    values = {
        "api_token": f"{canary}-default-env",
        "my_union_api_key": f"{canary}-custom-env",
        "tls_cert": f"-----BEGIN {canary}-----\r\nfile line\n",
        "gcp_sa": json.dumps({"type": "service_account", "private_key": f"{canary}-sa"}),
        "db_creds": f"{canary}-password",
    }
    store(cluster, namespace, values)
    requests = [
        {"key": "api_token"},
        {"key": "my_union_api_key", "envVar": "UNION_API_KEY"},
        {"key": "tls_cert", "mountRequirement": "FILE"},
        {"key": "gcp_sa", "mountRequirement": "FILE", "envVar": "GOOGLE_APPLICATION_CREDENTIALS"},
        {"key": "db_password", "from": {"secret": naming.secret_object_name("db_creds"), "key": "db_creds"}},
    ]
    kinds = {
        "api_token": "env",
        "my_union_api_key": "env",
        "tls_cert": "file",
        "gcp_sa": "file",
        "db_password": "env",
    }
    digests = {
        key: (hashlib.sha256(values["db_creds" if key == "db_password" else key].encode()).hexdigest(), kind)
        for key, kind in kinds.items()
    }
    taskrun(cluster, namespace, "train", requests, json.dumps(digests))
    succeeded(cluster, namespace, ["train"])
    task_log = run(cluster, cluster.kubectl(), "logs", "train", "-n", namespace).stdout
    for key, kind in kinds.items():
        assert f"read {key} from {kind}" in task_log, task_log
    assert "every secret matches" in task_log

    # A labelled pod through the webhook: the API server calls the operator's Service.
    admission = client.AdmissionregistrationV1Api(cluster.api)
    webhook = cluster.api.sanitize_for_serialization(
        admission.read_mutating_webhook_configuration(release.name)
    )
    [hook] = webhook["webhooks"]
    assert hook["clientConfig"]["service"]["namespace"] == release.namespace
    assert hook["clientConfig"]["service"]["name"] == f"{release.name}-webhook"
    check = json.dumps({"api_token": digests["api_token"], "tls_cert": digests["tls_cert"]})
    created = cluster.core.create_namespaced_pod(
        namespace,
        labelled_pod("plain", [{"key": "api_token"}, {"key": "tls_cert", "mountRequirement": "FILE"}], check),
    )
    assert "sesame.dev/injected" in (created.metadata.annotations or {})
    eventually(
        lambda: pod_phase(cluster, namespace, "plain") == "Succeeded",
        timeout=90,
        what="the injected pod to run",
    )
    # A labelled pod asking for a secret that does not exist: denied, with Sesame's message.
    with pytest.raises(ApiException) as denied:
        cluster.core.create_namespaced_pod(namespace, labelled_pod("denied", [{"key": "missing_key"}], "{}"))
    message = json.loads(denied.value.body)["message"]
    for part in ('admission webhook "', "denied the request", "missing_key", "sesame create secret"):
        assert part in message, message
    leaks.record("webhook denial", message)

    # Logs: one JSON object per line (the default logFormat), no secret value anywhere.
    log = release.logs(pod["metadata"]["name"])
    json_log_lines(log)
    assert_no_refusals(log)  # the chart's RBAC is sufficient for all of the above
    assert canary not in log
    # Metrics through the Service (default port 9090).
    scraped = metrics(cluster, release.namespace, f"{release.name}-metrics", 9090)
    assert total(scraped, "sesame_taskruns_finished_total", phase="Succeeded") >= 1
    assert canary not in scraped
    # The NetworkPolicy admits the API server (its advertise address, looked up at install) to the
    # webhook and metrics ports; the local bridge CNI does not enforce it (README).
    policy = yaml.safe_load(
        release.kubectl("get", "networkpolicy", release.name, "-n", release.namespace, "-o", "yaml").stdout
    )
    api_server = [{"ipBlock": {"cidr": f"{localnode.APISERVER_IP}/32"}}]
    assert [(rule["ports"][0]["port"], rule["from"]) for rule in policy["spec"]["ingress"]] == [
        ("webhook", api_server),
        ("metrics", api_server),
    ]

    # A second release for every namespace is refused before anything is created.
    second = new_release(cluster, releases)
    refused = one_line(
        second.helm("install", second.name, str(CHART), "-n", second.namespace, "--create-namespace")
    )
    assert (
        f"another Sesame release ({release.namespace}/{release.name}, ClusterRole {release.name}-operator)"
        in refused
    )
    assert second.kubectl("get", "namespace", second.namespace).returncode != 0
    assert not second.leftovers()

    # `helm upgrade` to a new image tag while TaskRuns are being created: none lost, none doubled.
    new_image = f"ghcr.io/sesame-dev/sesame:{UPGRADE_TAG}"
    images.tag_in_node(node_state, operator_image, new_image)
    with creating_taskruns(cluster, namespace, "during-upgrade", count=8, every=1.0) as created_names:
        time.sleep(1.5)  # some exist before the old operator stops
        before = len(created_names)
        release.upgrade("--set", f"image.tag={UPGRADE_TAG}")
        during = len(created_names) - before
    [pod] = release.pods()
    assert pod["spec"]["containers"][0]["image"] == new_image
    succeeded(cluster, namespace, created_names)
    print(
        f"helm upgrade: TaskRuns created {before} before it, {during} during the rollout, "
        f"{len(created_names) - before - during} after; {len(created_names)} Succeeded, one pod each"
    )

    # Probes are real: freeze the operator's process; the liveness probe restarts it.
    frozen = container_processes(node_state, pod)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    name = pod["metadata"]["name"]
    eventually(
        lambda: (
            not ready(
                cluster.api.sanitize_for_serialization(
                    cluster.core.read_namespaced_pod(name, release.namespace)
                )
            )
        ),
        timeout=30,
        what="the readiness probe to take the hung operator out of its Services",
    )
    restarted = eventually(
        lambda: (
            (
                p := cluster.api.sanitize_for_serialization(
                    cluster.core.read_namespaced_pod(name, release.namespace)
                )
            )
            and restarts(p) == 1
            and ready(p)
        ),
        timeout=90,
        interval=1,
        what="the kubelet to restart the hung operator",
    )
    assert restarted
    events = cluster.core.list_namespaced_event(
        release.namespace, field_selector=f"involvedObject.name={name}"
    ).items
    assert any(e.reason == "Unhealthy" and "Liveness probe failed" in (e.message or "") for e in events), [
        (e.reason, e.message) for e in events
    ]
    # …and serves again.
    simple_taskrun(cluster, namespace, "after-restart")
    succeeded(cluster, namespace, ["after-restart"])

    release.uninstall_leaves_nothing()
    assert release.kubectl("get", "mutatingwebhookconfiguration", release.name).returncode != 0


# --- story 2: non-default values together -------------------------------------------------------------


def peering_leader(cluster: Cluster, namespace: str, name: str) -> str:
    """The acting replica: the live peer with the highest priority (peers are named by pod)."""
    peering = cluster.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
    live = {peer: info for peer, info in (peering.get("status") or {}).items() if info.get("lifetime")}
    return max(live, key=lambda peer: live[peer]["priority"]) if len(live) == 2 else ""


def test_namespace_list_two_replicas_failover_without_webhook(
    cluster: Cluster,
    operator_image: str,
    releases: list[Release],
    namespace: str,
    canary: str,
) -> None:
    """watchNamespaces (a list), replicas: 2 (with the webhook off: without cert-manager the chart
    refuses two replicas that would each make their own webhook CA), logFormat json, metrics on
    another port, the NetworkPolicy off, and a namespace template `--set` cannot pass."""
    project = f"p{uuid.uuid4().hex[:6]}"
    team_dev, team_prod = f"dev-{project}", f"prod-{project}"  # the template is {domain}-{project}
    for watched in (team_dev, team_prod):
        cluster.create_namespace(watched)
    release = new_release(cluster, releases)
    try:
        seconds = release.install(
            "--set",
            f"watchNamespaces={{{team_dev},{team_prod}}}",
            "--set",
            "replicas=2",
            "--set",
            "webhook.enabled=false",
            "--set",
            "logFormat=json",
            "--set",
            "metrics.port=9191",
            "--set",
            "networkPolicy.enabled=false",
            "--set-literal",
            "namespaceTemplate={domain}-{project}",
        )
        print(f"helm install (2 replicas) → Ready: {seconds:.1f}s")
        assert len(release.pods()) == 2
        # Only the listed namespaces: a Role in each, nothing cluster-wide; no webhook; no policy.
        made = set(release.leftovers())
        assert f"clusterrole.rbac.authorization.k8s.io/{release.name}-operator" not in made
        assert f"role.rbac.authorization.k8s.io/{release.name}-operator" in made
        assert not {
            name for name in made if name.startswith(("mutatingwebhookconfiguration", "networkpolicy"))
        }
        assert (
            release.kubectl("get", "service", f"{release.name}-webhook", "-n", release.namespace).returncode
            != 0
        )

        # The CLI maps --project/--domain with the release's template (from its ConfigMap).
        config = cluster.core.read_namespaced_config_map(f"{release.name}-config", release.namespace)
        assert config.data == {"namespaceTemplate": "{domain}-{project}"}
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SESAME_NAMESPACE_TEMPLATE", config.data["namespaceTemplate"])
            store(cluster, team_dev, {"api_token": f"{canary}-dev"}, "--project", project, "--domain", "dev")
        check = json.dumps({"api_token": (hashlib.sha256(f"{canary}-dev".encode()).hexdigest(), "env")})
        taskrun(cluster, team_dev, "train", [{"key": "api_token"}], check)
        simple_taskrun(cluster, team_prod, "other")
        simple_taskrun(cluster, namespace, "not-served")  # outside the list
        succeeded(cluster, team_dev, ["train"])
        succeeded(cluster, team_prod, ["other"])

        # The leader's pod is deleted while TaskRuns keep coming: the standby takes over.
        leader = eventually(lambda: peering_leader(cluster, team_dev, release.name), what="two live peers")
        [standby] = [p["metadata"]["name"] for p in release.pods() if p["metadata"]["name"] != leader]
        with creating_taskruns(cluster, team_dev, "failover", count=6, every=1.0) as created_names:
            time.sleep(1.5)
            deleted = time.monotonic()
            cluster.core.delete_namespaced_pod(leader, release.namespace)
            # Once the leader has exited, only the standby can make this TaskRun's pod.
            eventually(
                lambda: cluster.pod(release.namespace, leader) is None, timeout=60, what="the leader gone"
            )
            exited = time.monotonic() - deleted
            simple_taskrun(cluster, team_dev, "first-after")
            eventually(
                lambda: (cluster.taskrun(team_dev, "first-after").get("status") or {}).get("podName"),
                timeout=60,
                interval=0.1,
                what="the standby to make the pod of a TaskRun created after the leader left",
            )
            acting = time.monotonic() - deleted - exited
        print(
            f"leader pod deleted → exited {exited:.1f}s → the standby made a new TaskRun's pod {acting:.1f}s"
        )
        succeeded(cluster, team_dev, [*created_names, "first-after"])
        assert "Resuming operations after the pause" in release.logs(standby)
        # Nothing outside the list was touched (checked after the positive signals above).
        assert not (cluster.taskrun(namespace, "not-served").get("status") or {}).get("conditions")
        assert cluster.core.list_namespaced_pod(namespace, label_selector="sesame.dev/taskrun").items == []

        for pod in release.pods():
            log = release.logs(pod["metadata"]["name"])
            json_log_lines(log)
            assert_no_refusals(log)
            assert canary not in log
        scraped = metrics(cluster, release.namespace, f"{release.name}-metrics", 9191)
        assert "# TYPE sesame_taskruns_finished_total counter" in scraped
        release.rollout()  # the replacement replica is Ready too
        release.uninstall_leaves_nothing()
    finally:
        for watched in (team_dev, team_prod):
            leaks.collect(cluster.api, watched)
            cluster.delete_namespace(watched)


# --- story 3: bad input --------------------------------------------------------------------------------


def serves(cluster: Cluster, group: str) -> bool:
    found = run(cluster, cluster.kubectl(), "api-versions").stdout.split()
    return any(version.startswith(f"{group}/") for version in found)


def test_bad_input_gets_one_line_and_leaves_nothing_behind(
    cluster: Cluster, operator_image: str, releases: list[Release]
) -> None:
    release = new_release(cluster, releases)

    def refused(*args: str) -> str:
        line = one_line(
            release.helm(
                "install", release.name, str(CHART), "-n", release.namespace, "--create-namespace", *args
            )
        )
        assert release.kubectl("get", "namespace", release.namespace).returncode != 0, "namespace created"
        assert release.helm("status", release.name, "-n", release.namespace).returncode != 0, "release stored"
        assert not release.leftovers()
        return line

    # cert-manager values without cert-manager (other tests' stand-in CRDs go away asynchronously).
    eventually(lambda: not serves(cluster, "cert-manager.io"), timeout=60, what="no cert-manager API")
    line = refused("--set", "webhook.certManager.enabled=true")
    assert "webhook.certManager.enabled=true needs cert-manager" in line, line
    missing = unique("nowhere")
    line = refused("--set", f"watchNamespaces={{{missing}}}")
    assert f"watchNamespaces: namespace {missing} does not exist: create it first" in line, line

    # The TaskRun CRD removed (and not reinstalled: --skip-crds).
    crd = cluster.kubectl()
    removed = run(cluster, crd, "delete", "crd", "taskruns.sesame.dev", "--wait=true", "--timeout=120s")
    assert removed.returncode == 0, removed.stderr
    try:
        eventually(lambda: not serves(cluster, "sesame.dev"), timeout=60, what="the TaskRun API to be gone")
        line = refused("--skip-crds")
        assert "the TaskRun CRD (taskruns.sesame.dev/v1alpha1) is not installed in this cluster" in line, line
    finally:
        install_crds(cluster.api)

    # A wrong image: Helm cannot know it; with --wait --atomic it removes what it made, and the
    # pod's status meanwhile names the image that cannot be pulled.
    wrong = "ghcr.io/sesame-dev/sesame:does-not-exist"
    install = subprocess.Popen(
        [
            cluster.helm(),
            "install",
            release.name,
            str(CHART),
            "-n",
            release.namespace,
            "--create-namespace",
            "--set",
            "image.tag=does-not-exist",
            "--wait",
            "--atomic",
            "--timeout",
            "20s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env(),
    )
    try:

        def waiting() -> str:
            pods = (
                release.pods()
                if release.kubectl("get", "namespace", release.namespace).returncode == 0
                else []
            )
            states = [
                s["state"].get("waiting") or {}
                for p in pods
                for s in p["status"].get("containerStatuses") or []
            ]
            return next(
                (
                    f"{w['reason']}: {w.get('message', '')}"
                    for w in states
                    if w.get("reason") in ("ErrImagePull", "ImagePullBackOff")
                ),
                "",
            )

        reason = eventually(waiting, timeout=60, what="the pod to report the image it cannot pull")
        assert wrong in reason, reason
    finally:
        _, stderr = install.communicate(timeout=120)
    assert install.returncode != 0
    assert "has been uninstalled due to atomic being set" in stderr, stderr
    eventually(lambda: not release.leftovers(), timeout=60, what="nothing left of the failed release")
    cluster.delete_namespace(release.namespace)  # --create-namespace made it; Helm leaves namespaces
