"""The Helm chart against the real API server: every rendered object passes server-side validation,
`helm install` works, and the chart's RBAC grants no more than the reviewed list: `kubectl auth
can-i` shows what the chart's ServiceAccount cannot do, in both RBAC modes (ClusterRole for every
namespace; a Role per listed namespace), and that it can write exactly the one webhook
configuration the chart creates. That the rules are SUFFICIENT is proven by the operator running
in-cluster from its image under that ServiceAccount (tests/integration/test_helm_incluster.py);
the one mode not run there, Kopf peering across every namespace (a ClusterKopfPeering), runs here
in-process with the ServiceAccount's token. The minimal side (nothing beyond the reviewed list) is
tests/unit/test_chart_rbac.py.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.config import kube_config

from sesame.webhook import configuration
from tests.support.cluster import TASK_IMAGE, Cluster, eventually
from tests.support.operator import in_process_operator
from tests.unit.test_chart_rbac import CHART, KUBE_VERSION, helm_template, set_args

THIRD_PARTY_CRDS = Path(__file__).resolve().parents[1] / "data" / "third-party-crds.yaml"
TEMPLATE = {
    "spec": {"containers": [{"name": "main", "image": TASK_IMAGE, "command": ["python3", "-c", "pass"]}]}
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(cluster: Cluster, *command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, check=False, env=cluster.env()
    )


@pytest.fixture(scope="module")
def third_party_crds(cluster: Cluster) -> Iterator[None]:
    """Stand-in cert-manager and prometheus-operator CRDs (schemas accept anything)."""
    kubectl = cluster.kubectl()
    applied = run(cluster, kubectl, "apply", "--server-side", "-f", str(THIRD_PARTY_CRDS))
    assert applied.returncode == 0, applied.stderr
    waited = run(
        cluster, kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(THIRD_PARTY_CRDS)
    )
    assert waited.returncode == 0, waited.stderr
    yield
    run(cluster, kubectl, "delete", "--ignore-not-found", "--wait=false", "-f", str(THIRD_PARTY_CRDS))


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[list[str]]:
    """Extra namespaces a test asks for by calling `make(prefix)`; all deleted afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        cluster.delete_namespace(name)


def make_namespace(cluster: Cluster, made: list[str], prefix: str) -> str:
    name = unique(prefix)
    cluster.create_namespace(name)
    made.append(name)
    return name


# --- every rendered object, validated by the API server ------------------------------------------


DRY_RUN_COMBOS: list[tuple[str, list[str]]] = [
    ("default", []),
    ("webhook-off", ["webhook.enabled=false"]),
    ("namespaces", ["watchNamespaces={WATCHED}"]),
    (
        "certmanager-servicemonitor",
        ["webhook.certManager.enabled=true", "metrics.serviceMonitor.enabled=true"],
    ),
    (
        "namespaces-certmanager-issuerref-servicemonitor",
        [
            "watchNamespaces={WATCHED}",
            "webhook.certManager.enabled=true",
            "webhook.certManager.issuerRef.name=corp-ca",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
        ],
    ),
]


@pytest.mark.parametrize(("combo", "values"), DRY_RUN_COMBOS, ids=[c for c, _ in DRY_RUN_COMBOS])
def test_every_rendered_object_passes_server_side_dry_run(
    cluster: Cluster, third_party_crds: None, namespaces: list[str], combo: str, values: list[str]
) -> None:
    release_ns = make_namespace(cluster, namespaces, "sesame-system")
    watched = ",".join(make_namespace(cluster, namespaces, "team") for _ in range(2))
    values = [v.replace("WATCHED", watched) for v in values]
    rendered = helm_template(values, release="sesame", namespace=release_ns, include_crds=True).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    result = run(cluster, cluster.kubectl(), "apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert result.returncode == 0, result.stderr
    for obj in objects:
        kind = obj["kind"].lower()
        assert re.search(
            rf"^{re.escape(kind)}(\.\S+)?/{re.escape(obj['metadata']['name'])} ", result.stdout, re.M
        ), f"{obj['kind']}/{obj['metadata']['name']} missing from:\n{result.stdout}"
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "Service", "ConfigMap"} <= kinds
    if "webhook.certManager.enabled=true" in values:
        assert {"Certificate"} <= kinds
    if "metrics.serviceMonitor.enabled=true" in values:
        assert "ServiceMonitor" in kinds


# --- install, then run the operator as the chart's ServiceAccount --------------------------------


@contextlib.contextmanager
def installed(cluster: Cluster, release: str, namespace: str, values: Sequence[str]) -> Iterator[None]:
    """`helm install` (no --wait: no kubelet runs the operator pod here); `helm uninstall` after."""
    result = run(
        cluster,
        cluster.helm(),
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *set_args(values),
    )
    assert result.returncode == 0, result.stderr
    assert "kubectl apply --server-side -f sesame/crds/" in result.stdout, result.stdout
    try:
        yield
    finally:
        removed = run(cluster, cluster.helm(), "uninstall", release, "--namespace", namespace, "--wait")
        assert removed.returncode == 0, removed.stderr


def service_account_kubeconfig(cluster: Cluster, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a fresh bound token."""
    token = cluster.core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = dict(next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"])
    if "certificate-authority" in server:  # relative paths are relative to the admin kubeconfig
        server["certificate-authority"] = str(
            (cluster.kubeconfig.parent / server["certificate-authority"]).resolve()
        )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": server}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": name}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def as_service_account(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, namespace: str, name: str
) -> Iterator[Path]:
    """KUBECONFIG (and the client library's cached default path, which Kopf's login reads) point at
    the ServiceAccount's kubeconfig inside the block, and at the admin's again afterwards; the
    operator's environment is the chart's."""
    path = service_account_kubeconfig(cluster, namespace, name, tmp_path / f"{name}.kubeconfig")
    with monkeypatch.context() as patch:
        patch.setenv("KUBECONFIG", str(path))
        patch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
        # What the chart's Deployment sets (tests/unit/test_chart_rbac.py checks it is there).
        patch.setenv("SESAME_KOPF_SCANNING", "off")
        yield path


def can_i(cluster: Cluster, subject: str, verb: str, resource: str, *scope: str) -> bool:
    result = run(cluster, cluster.kubectl(), "auth", "can-i", verb, resource, f"--as={subject}", *scope)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def assert_webhook_configuration_rights(cluster: Cluster, sa: str, kubeconfig: Path, name: str) -> None:
    """The chart's webhook configuration: read and replace it as the ServiceAccount; create nothing."""
    for verb in ("get", "update"):
        assert can_i(cluster, sa, verb, f"mutatingwebhookconfigurations/{name}")
        assert not can_i(cluster, sa, verb, "mutatingwebhookconfigurations/other")
    for verb in ("list", "watch", "patch", "delete"):
        assert not can_i(cluster, sa, verb, f"mutatingwebhookconfigurations/{name}")
    assert not can_i(cluster, sa, "create", "mutatingwebhookconfigurations")
    assert not can_i(cluster, sa, "get", f"validatingwebhookconfigurations/{name}")

    def as_sa(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**cluster.env(), "KUBECONFIG": str(kubeconfig)}
        return subprocess.run(
            [cluster.kubectl(), *args], input=stdin, capture_output=True, text=True, env=env
        )

    # What apply_configuration does: read it, then replace it whole.
    read = as_sa("get", "mutatingwebhookconfiguration", name, "-o", "yaml")
    assert read.returncode == 0, read.stderr
    replaced = as_sa("replace", "-f", "-", stdin=read.stdout)
    assert replaced.returncode == 0, replaced.stderr
    other = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n"
    other += f"metadata: {{name: {name}-other}}\nwebhooks: []\n"
    for refused in (
        as_sa("create", "-f", "-", stdin=other),
        as_sa("delete", "mutatingwebhookconfiguration", name),
    ):
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower(), refused.stderr


def helm_upgrade(cluster: Cluster, release: str, namespace: str) -> None:
    upgraded = run(
        cluster, cluster.helm(), "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values"
    )
    assert upgraded.returncode == 0, upgraded.stderr


def helm_upgrade_keeps_the_webhooks(cluster: Cluster, release: str, namespace: str) -> None:
    """The operator filled in the chart's configuration; `helm upgrade` must neither undo that nor
    lose Helm's ownership of the object (its three-way merge sees no `webhooks` in the chart)."""
    admission = client.AdmissionregistrationV1Api(cluster.api)
    before = admission.read_mutating_webhook_configuration(release)
    assert before.webhooks, "the operator did not fill in the chart's webhook configuration"
    helm_upgrade(cluster, release, namespace)
    after = admission.read_mutating_webhook_configuration(release)
    assert [w.client_config.ca_bundle for w in after.webhooks or []] == [
        w.client_config.ca_bundle for w in before.webhooks
    ]
    assert (after.metadata.annotations or {}).get("meta.helm.sh/release-name") == release
    assert (after.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "Helm"


def harmless_configuration(release: str) -> dict[str, Any]:
    """What the operator writes into the chart's configuration, aimed at a namespace that does not
    exist, so that no other test's pod is ever sent to it."""
    return configuration.build_configuration(
        name=release,
        client_config=configuration.url_client_config("https://127.0.0.1:1", "unused", None),
        timeout_seconds=5,
        excluded_namespaces=["kube-system"],
        only_namespaces=["nowhere"],
    )


def a_missing_configuration_is_named_and_helm_upgrade_restores_it(
    cluster: Cluster, release: str, namespace: str, as_sa: client.ApiClient
) -> None:
    """Deleted behind Helm's back, the operator (no create right) says what to do; doing it works."""
    body = harmless_configuration(release)
    assert configuration.delete_configuration(cluster.api, release)
    with pytest.raises(configuration.ConfigurationError, match="run `helm upgrade`") as refused:
        configuration.apply_configuration(as_sa, body)
    assert str(refused.value).count("\n") == 0
    helm_upgrade(cluster, release, namespace)
    configuration.apply_configuration(as_sa, body)


def test_cluster_wide_install_grants_no_more_than_the_operator_uses(
    cluster: Cluster, namespace: str, namespaces: list[str], tmp_path: Path
) -> None:
    release_ns = make_namespace(cluster, namespaces, "sesame-system")
    release = unique("sesame")
    sa = f"system:serviceaccount:{release_ns}:{release}"
    with installed(cluster, release, release_ns, []):
        roles = run(cluster, cluster.kubectl(), "get", "clusterrole", f"{release}-operator", "-o", "name")
        assert roles.returncode == 0, roles.stderr
        kubeconfig = service_account_kubeconfig(cluster, release_ns, release, tmp_path / "sa.kubeconfig")
        as_sa = kube_config.new_client_from_config(config_file=str(kubeconfig))
        try:
            # The operator's own write of the chart's configuration, with the chart's rights.
            configuration.apply_configuration(as_sa, harmless_configuration(release))
            helm_upgrade_keeps_the_webhooks(cluster, release, release_ns)

            # Reads Secrets everywhere (it serves every namespace), writes none anywhere.
            assert can_i(cluster, sa, "list", "secrets", "--all-namespaces")
            assert can_i(cluster, sa, "get", "secrets", "-n", namespace)
            for verb in ("create", "update", "patch", "delete", "deletecollection"):
                assert not can_i(cluster, sa, verb, "secrets", "-n", namespace), verb
                assert not can_i(cluster, sa, verb, "secrets", "--all-namespaces"), verb
            for verb, resource in [
                ("delete", "pods"),
                ("update", "pods"),
                ("patch", "pods"),
                ("update", "taskruns.sesame.dev"),
                ("delete", "taskruns.sesame.dev"),
                ("create", "taskruns.sesame.dev"),
                ("list", "configmaps"),
                ("list", "namespaces"),
            ]:
                assert not can_i(cluster, sa, verb, resource, "-n", namespace), (verb, resource)
            # (`kubectl auth can-i VERB pods/exec` would ask about a pod NAMED exec: use --subresource.)
            for verb, resource, subresource in [
                ("create", "pods", "exec"),
                ("get", "pods", "log"),
                ("create", "pods", "eviction"),
                ("create", "serviceaccounts", "token"),
                ("update", "taskruns.sesame.dev", "status"),
            ]:
                assert not can_i(cluster, sa, verb, resource, "-n", namespace, f"--subresource={subresource}")
            assert can_i(cluster, sa, "patch", "taskruns.sesame.dev", "-n", namespace, "--subresource=status")
            assert can_i(
                cluster, sa, "update", "taskruns.sesame.dev", "-n", namespace, "--subresource=finalizers"
            )
            assert_webhook_configuration_rights(cluster, sa, kubeconfig, release)
            a_missing_configuration_is_named_and_helm_upgrade_restores_it(cluster, release, release_ns, as_sa)
        finally:
            as_sa.close()
    for kind, name in [("clusterrole", f"{release}-operator"), ("mutatingwebhookconfiguration", release)]:
        gone = run(cluster, cluster.kubectl(), "get", kind, name, "-o", "name")
        assert gone.returncode != 0, f"helm uninstall left the {kind} {name} behind"


def test_namespace_list_install_grants_nothing_outside_the_list(
    cluster: Cluster, namespaces: list[str]
) -> None:
    release_ns = make_namespace(cluster, namespaces, "sesame-system")
    team_a, team_b = (
        make_namespace(cluster, namespaces, "team-a"),
        make_namespace(cluster, namespaces, "team-b"),
    )
    outside = make_namespace(cluster, namespaces, "outside")
    release = unique("sesame")
    sa = f"system:serviceaccount:{release_ns}:{release}"
    values = [f"watchNamespaces={{{team_a},{team_b}}}", "webhook.enabled=false"]
    with installed(cluster, release, release_ns, values):
        for watched in (team_a, team_b):
            assert can_i(cluster, sa, "list", "secrets", "-n", watched)
            assert can_i(cluster, sa, "create", "pods", "-n", watched)
            for verb in ("create", "update", "patch", "delete"):
                assert not can_i(cluster, sa, verb, "secrets", "-n", watched), verb
        # Nothing outside the list: not its Secrets, not its pods, nothing cluster-wide.
        for verb, resource in [
            ("get", "secrets"),
            ("list", "secrets"),
            ("watch", "secrets"),
            ("create", "pods"),
        ]:
            assert not can_i(cluster, sa, verb, resource, "-n", outside), (verb, resource)
            assert not can_i(cluster, sa, verb, resource, "-n", release_ns), (verb, resource)
            assert not can_i(cluster, sa, verb, resource, "--all-namespaces"), (verb, resource)
        # webhook.enabled=false: no webhook configuration rights at all.
        assert not can_i(cluster, sa, "create", "mutatingwebhookconfigurations")
        assert not can_i(cluster, sa, "get", f"mutatingwebhookconfigurations/{release}")
    # The Roles went with the release.
    left = run(cluster, cluster.kubectl(), "get", "role", f"{release}-operator", "-n", team_a, "-o", "name")
    assert left.returncode != 0


def assert_no_refusals(output: str) -> None:
    """No 403 anywhere in the operator's log (Kopf only logs a refused event post or watch)."""
    refused = [
        line
        for line in output.splitlines()
        if re.search(r'" 403 |status=403|forbidden', line, re.IGNORECASE)
        # not RBAC: another test's namespace being deleted refuses new events to anyone
        and "NamespaceTerminating" not in line
    ]
    assert not refused, "the chart's RBAC refused the operator:\n" + "\n".join(refused[:20])


def test_cluster_wide_peering_is_sufficient(
    cluster: Cluster,
    third_party_crds: None,
    namespace: str,
    namespaces: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """replicas > 1 for every namespace: the chart's ClusterKopfPeering and its RBAC let Kopf
    peering work (the keep-alive patch), and the one live replica acts. (A KopfPeering per listed
    namespace runs in-cluster with two replicas in tests/integration/test_helm_incluster.py.)"""
    release_ns = make_namespace(cluster, namespaces, "sesame-system")
    release = unique("sesame")
    sa = f"system:serviceaccount:{release_ns}:{release}"
    values = ["replicas=2", "webhook.certManager.enabled=true"]
    args = [
        "run",
        "--verbose",
        "-m",
        "sesame.manager",
        "--peering",
        release,
        "--priority",
        "7",
        "--all-namespaces",
    ]

    def peering_status() -> dict[str, Any] | None:
        found = cluster.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", release)
        status: dict[str, Any] | None = found.get("status")
        return status

    with installed(cluster, release, release_ns, values):
        assert not peering_status()  # made by the chart, empty
        with (
            as_service_account(cluster, monkeypatch, tmp_path, release_ns, release),
            in_process_operator(args, f"operator of release {release} (its ServiceAccount)") as runner,
        ):
            peers = eventually(peering_status, what="this replica's keep-alive in the peering (patch)")
            assert [peer["priority"] for peer in peers.values()] == [7]
            cluster.create_taskrun(namespace, "train", {"template": TEMPLATE})
            eventually(
                lambda: (cluster.taskrun(namespace, "train").get("status") or {}).get("podName"),
                what="the acting replica to create the TaskRun's pod",
            )
        assert runner.exception is None, runner.exception
        assert_no_refusals(runner.output)
        resource = "clusterkopfpeerings.kopf.dev"
        assert can_i(cluster, sa, "patch", f"{resource}/{release}")
        assert not can_i(cluster, sa, "patch", f"{resource}/someone-else")
        assert not can_i(cluster, sa, "create", resource, "--all-namespaces")
        assert not can_i(cluster, sa, "delete", f"{resource}/{release}")


def test_helm_lint_and_template_for_the_live_kube_version(cluster: Cluster) -> None:
    """The chart's kubeVersion constraint accepts the control plane's real version."""
    version = run(cluster, cluster.kubectl(), "version", "-o", "json")
    assert version.returncode == 0, version.stderr
    server: dict[str, Any] = yaml.safe_load(version.stdout)["serverVersion"]
    assert server["gitVersion"] == f"v{KUBE_VERSION}"
    result = run(cluster, cluster.helm(), "install", "probe", str(CHART), "--dry-run=server", "-n", "default")
    assert result.returncode == 0, result.stderr
    assert "NOTES:" in result.stdout
