"""The Helm chart, rendered with `helm template` (no cluster): RBAC is exactly the reviewed list.

Also: the chart's CRD is the repository's CRD, the schema refuses bad values with a message that
names the value, the Deployment is hardened, its arguments parse with `sesame operator run`, and
the chart's default image is the one built for the package version (the image itself:
tests/unit/test_dockerfile.py).
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sesame"
REVIEWED = CHART / "rbac-reviewed.yaml"
KUBE_VERSION = "1.34.4"
RELEASE, RELEASE_NAMESPACE = "sesame", "sesame-system"

# Value sets every chart test renders: (id, --set arguments).
COMBOS: list[tuple[str, list[str]]] = [
    ("default", []),
    ("webhook-off", ["webhook.enabled=false"]),
    ("namespaces", ["watchNamespaces={team-a-development,team-b-production}"]),
    (
        "namespaces-certmanager-servicemonitor",
        [
            "watchNamespaces={team-a-development}",
            "webhook.certManager.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "logFormat=plain",
            "logLevel=debug",
        ],
    ),
    (
        "certmanager-issuerref",
        [
            "webhook.certManager.enabled=true",
            "webhook.certManager.issuerRef.name=corp-ca",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
        ],
    ),
    ("replicas-peering", ["replicas=3", "webhook.certManager.enabled=true"]),
    (
        "replicas-peering-namespaces",
        ["replicas=2", "webhook.enabled=false", "watchNamespaces={team-a,team-b}"],
    ),
]
COMBO_IDS = [name for name, _ in COMBOS]

Permission = tuple[str, str, str, tuple[str, ...]]  # apiGroup, resource, verb, resourceNames
# Without a cluster to look up the API server's addresses, the NetworkPolicy needs them given
# (values.yaml `networkPolicy.apiServer`); every offline render here passes this one.
API_SERVER_PEER = ["--set-json", 'networkPolicy.apiServer=[{"ipBlock":{"cidr":"192.0.2.10/32"}}]']


@cache
def helm() -> str:
    from localcluster import build_binaries  # tools/ (on sys.path via tests/conftest.py)

    return str(build_binaries() / "helm")


def set_args(values: Sequence[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def helm_template(
    values: Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = RELEASE_NAMESPACE,
    include_crds: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    command = [
        helm(),
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *(["--include-crds"] if include_crds else []),
        *API_SERVER_PEER,
        *set_args(values),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=check)


def render(values: Sequence[str] = (), **kwargs: Any) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(helm_template(values, **kwargs).stdout) if doc]


def of_kind(objects: Iterable[Mapping[str, Any]], *kinds: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def permissions(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    """Rules flattened to single permissions, so equal grants compare equal however they are grouped."""
    return {
        (group, resource, verb, tuple(sorted(rule.get("resourceNames") or ())))
        for rule in rules
        for group in rule.get("apiGroups") or ()
        for resource in rule.get("resources") or ()
        for verb in rule.get("verbs") or ()
    }


def reviewed(fullname: str = RELEASE) -> dict[str, set[Permission]]:
    """operator, webhook, peering-cluster and peering-namespaced permissions from the review file."""
    data = yaml.safe_load(REVIEWED.read_text().replace("RELEASE-FULLNAME", fullname))
    lists = {
        "operator": data["operator"],
        "webhook": data["webhook"],
        "peering-cluster": data["peering"]["cluster"],
        "peering-namespaced": data["peering"]["namespaced"],
    }
    for rules in lists.values():
        for rule in rules:
            assert rule.get("why", "").strip(), f"reviewed rule without a reason: {rule}"
    return {role: permissions(rules) for role, rules in lists.items()}


def values_of(values: Sequence[str]) -> tuple[list[str], bool, int]:
    """(watchNamespaces, webhook.enabled, replicas) as the chart sees these --set arguments."""
    namespaces: list[str] = []
    webhook, replicas = True, 1
    for value in values:
        key, _, raw = value.partition("=")
        if key == "watchNamespaces":
            namespaces = [n for n in raw.strip("{}").split(",") if n]
        if key == "webhook.enabled":
            webhook = raw == "true"
        if key == "replicas":
            replicas = int(raw)
    return namespaces, webhook, replicas


@pytest.mark.parametrize(("combo", "values"), COMBOS, ids=COMBO_IDS)
def test_rendered_rbac_is_exactly_the_reviewed_list(combo: str, values: list[str]) -> None:
    objects = render(values)
    expected = reviewed()
    namespaces, webhook, replicas = values_of(values)
    peering = set()
    if replicas > 1:
        peering = expected["peering-namespaced" if namespaces else "peering-cluster"]
    roles = of_kind(objects, "Role", "ClusterRole")
    operator_roles = [r for r in roles if r["metadata"]["name"].endswith("-operator")]
    webhook_roles = [r for r in roles if r["metadata"]["name"].endswith("-webhook")]
    assert len(operator_roles) + len(webhook_roles) == len(roles), "a role the review does not know"

    if namespaces:
        assert {r["kind"] for r in operator_roles} == {"Role"}, "namespace mode must not grant cluster-wide"
        assert sorted(r["metadata"]["namespace"] for r in operator_roles) == sorted(namespaces)
    else:
        assert [r["kind"] for r in operator_roles] == ["ClusterRole"]
    for role in operator_roles:
        assert permissions(role["rules"]) == expected["operator"] | peering, role["metadata"]
    if webhook:
        assert [r["kind"] for r in webhook_roles] == ["ClusterRole"]
        assert permissions(webhook_roles[0]["rules"]) == expected["webhook"]
    else:
        assert webhook_roles == []

    # Every binding grants a rendered role to exactly the chart's own ServiceAccount.
    service_accounts = of_kind(objects, "ServiceAccount")
    assert [(s["metadata"]["name"], s["metadata"]["namespace"]) for s in service_accounts] == [
        ("sesame", RELEASE_NAMESPACE)
    ]
    bindings = of_kind(objects, "RoleBinding", "ClusterRoleBinding")
    assert len(bindings) == len(roles)
    rendered = {(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")) for r in roles}
    for binding in bindings:
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ref["name"], scope) in rendered
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "sesame", "namespace": RELEASE_NAMESPACE}
        ]


@pytest.mark.parametrize(("combo", "values"), COMBOS, ids=COMBO_IDS)
def test_no_wildcards_escalation_or_secret_writes(combo: str, values: list[str]) -> None:
    for role in of_kind(render(values), "Role", "ClusterRole"):
        name = f"{role['kind']} {role['metadata']['name']}"
        assert "aggregationRule" not in role, name
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, name
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(field) or ()), f"{name}: wildcard in {rule}"
            assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "deletecollection", "*"}
            assert "rbac.authorization.k8s.io" not in rule["apiGroups"], name
            if "secrets" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, f"{name}: writes Secrets"
            if role["kind"] == "ClusterRole" and "" in rule["apiGroups"]:
                assert set(rule["resources"]) <= {"pods", "secrets", "events"}, name


def test_reviewed_list_is_exact() -> None:
    """Not a superset either: every reviewed permission is rendered by some value set."""
    rendered: set[Permission] = set()
    for _, values in COMBOS:
        for role in of_kind(render(values), "Role", "ClusterRole"):
            rendered |= permissions(role["rules"])
    listed = set().union(*reviewed().values())
    assert listed == rendered, (
        f"reviewed but never rendered: {listed - rendered}; rendered but not reviewed: {rendered - listed}"
    )


@pytest.mark.parametrize("name", ["taskrun.yaml", "kopf-peering.yaml"])
def test_chart_crds_are_the_repository_crds(name: str) -> None:
    assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
        f"charts/sesame/crds/{name} differs from crds/{name}: cp crds/{name} charts/sesame/crds/"
    )


def test_chart_ships_exactly_these_crds() -> None:
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["kopf-peering.yaml", "taskrun.yaml"]


@pytest.mark.parametrize(("combo", "values"), COMBOS, ids=COMBO_IDS)
def test_helm_lint_strict(combo: str, values: list[str]) -> None:
    result = subprocess.run(
        [
            helm(),
            "lint",
            str(CHART),
            "--strict",
            "--kube-version",
            KUBE_VERSION,
            *API_SERVER_PEER,
            *set_args(values),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["replicas=0"], "at '/replicas': minimum: got 0, want 1"),
        (["replicas=-3"], "at '/replicas': minimum: got -3, want 1"),
        (["replicas=one"], "at '/replicas': got string, want integer"),
        (["replicas=2"], "replicas: 2 replicas with webhook.enabled need webhook.certManager.enabled=true"),
        (["webhook.timeoutSeconds=0"], "at '/webhook/timeoutSeconds': minimum: got 0, want 1"),
        (["webhook.timeoutSeconds=10"], "at '/webhook/timeoutSeconds': maximum: got 10, want 5"),
        (["logFormat=xml"], "at '/logFormat': value must be one of 'plain', 'full', 'json'"),
        (["logLevel=trace"], "at '/logLevel': value must be one of 'debug', 'info', 'warning'"),
        (["watchNamespaces=team-a"], "at '/watchNamespaces': got string, want array"),
        (["watchNamespaces={Team_A}"], "at '/watchNamespaces/0': 'Team_A' does not match pattern"),
        (["watchNamespaces={team-*}"], "at '/watchNamespaces/0': 'team-*' does not match pattern"),
        (["watchNamespaces[0]=1"], "at '/watchNamespaces/0': got number, want string"),
        (["webhook.enabled=maybe"], "at '/webhook/enabled': got string, want boolean"),
        (["metrics.port=80"], "at '/metrics/port': minimum: got 80, want 1,024"),
        (["namespaceTemplate=fixed"], "at '/namespaceTemplate': 'fixed' does not match pattern"),
        (["image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of"),
        (["replica=2"], "additional properties 'replica' not allowed"),
        (["health.bindAddress=localhost"], "at '/health/bindAddress': 'localhost' does not match pattern"),
        (["metrics.bindAddress=any"], "at '/metrics/bindAddress': 'any' does not match pattern"),
        (["networkPolicy.apiServer[0].cidr=10.0.0.0/8"], "additional properties 'cidr' not allowed"),
        (["networkPolicy.enabled=yes"], "at '/networkPolicy/enabled': got string, want boolean"),
    ],
)
def test_schema_refuses_bad_values_clearly(values: list[str], message: str) -> None:
    result = helm_template(values, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert message in result.stderr, result.stderr


def deployment(values: Sequence[str] = ()) -> Mapping[str, Any]:
    [found] = of_kind(render(values), "Deployment")
    return found


@pytest.mark.parametrize(("combo", "values"), COMBOS, ids=COMBO_IDS)
def test_deployment_is_hardened(combo: str, values: list[str]) -> None:
    spec = deployment(values)["spec"]
    replicas = values_of(values)[2]
    assert spec["replicas"] == replicas
    if replicas == 1:
        assert spec["strategy"] == {"type": "Recreate"}
    else:
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "sesame"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == 8080
    assert ports["metrics"] == 9090
    # The RBAC grants no namespace or CRD access, so Kopf must not observe them (sesame.manager).
    assert {"name": "SESAME_KOPF_SCANNING", "value": "off"} in container["env"]
    # Nothing in the pod spec holds a literal secret; the only Secret volume is the webhook's cert.
    for env in container.get("env") or []:
        assert "secretKeyRef" not in (env.get("valueFrom") or {})
    secret_volumes = [v for v in pod.get("volumes") or [] if "secret" in v]
    assert all(v["secret"]["secretName"] == "sesame-webhook-tls" for v in secret_volumes)


def test_operator_arguments_parse_with_sesame_operator_run() -> None:
    from sesame.operator_command import parser

    for _, values in COMBOS:
        [container] = deployment(values)["spec"]["template"]["spec"]["containers"]
        args = parser().parse_args(["run", *container["args"]])
        namespaces, webhook, replicas = values_of(values)
        assert args.namespace == namespaces
        assert args.all_namespaces is (not namespaces)
        assert args.webhook == ("service" if webhook else "off")
        # One replica runs standalone; more use Kopf peering on the chart's own peering object.
        assert args.peering == (None if replicas == 1 else RELEASE)
        assert getattr(args, "priority", None) is None  # each replica draws its own


def test_peering_objects_follow_the_mode() -> None:
    assert of_kind(render(), "ClusterKopfPeering", "KopfPeering", "PodDisruptionBudget") == []
    objects = render(["replicas=2", "webhook.certManager.enabled=true"])
    [peering] = of_kind(objects, "ClusterKopfPeering", "KopfPeering")
    assert (peering["kind"], peering["metadata"]["name"]) == ("ClusterKopfPeering", RELEASE)
    [budget] = of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    objects = render(["replicas=2", "webhook.enabled=false", "watchNamespaces={a,b}"])
    peerings = of_kind(objects, "ClusterKopfPeering", "KopfPeering")
    assert sorted((p["kind"], p["metadata"]["namespace"]) for p in peerings) == [
        ("KopfPeering", "a"),
        ("KopfPeering", "b"),
    ]


def test_webhook_wiring() -> None:
    objects = render(["webhook.certManager.enabled=true"])
    [container] = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SESAME_WEBHOOK_SERVICE"] == f"{RELEASE_NAMESPACE}/sesame-webhook"
    assert env["SESAME_WEBHOOK_PORT"] == "9443"
    assert env["SESAME_WEBHOOK_TIMEOUT"] == "5"
    assert env["SESAME_WEBHOOK_CONFIG_NAME"] == "sesame"  # the resourceNames of the webhook's RBAC
    # The chart creates that configuration, empty: no `webhooks` for Helm's merges to overwrite.
    [shell] = of_kind(objects, "MutatingWebhookConfiguration")
    assert shell["metadata"]["name"] == "sesame"
    assert "webhooks" not in shell
    named = render(release="team-x")
    [shell] = of_kind(named, "MutatingWebhookConfiguration")
    [named_container] = of_kind(named, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert {"name": "SESAME_WEBHOOK_CONFIG_NAME", "value": "team-x-sesame"} in named_container["env"]
    assert shell["metadata"]["name"] == "team-x-sesame"
    assert "SESAME_WEBHOOK_NAMESPACES" not in env
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["webhook-certs"]["mountPath"] == env["SESAME_WEBHOOK_CERT_DIR"]
    assert mounts["webhook-certs"]["readOnly"] is True
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    assert services["sesame-webhook"]["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert services["sesame-metrics"]["spec"]["ports"][0]["name"] == "metrics"
    serving = next(c for c in of_kind(objects, "Certificate") if c["metadata"]["name"] == "sesame-webhook")
    assert serving["spec"]["secretName"] == "sesame-webhook-tls"
    assert "sesame-webhook.sesame-system.svc" in serving["spec"]["dnsNames"]

    # Without cert-manager: no cert-manager objects, no cert dir; the operator makes its own in /tmp.
    objects = render()
    assert of_kind(objects, "Certificate", "Issuer") == []
    [container] = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert "SESAME_WEBHOOK_CERT_DIR" not in {e["name"] for e in container["env"]}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]

    # Listed namespaces: only their pods are sent to the webhook.
    [container] = of_kind(render(["watchNamespaces={a,b}"]), "Deployment")[0]["spec"]["template"]["spec"][
        "containers"
    ]
    assert {"name": "SESAME_WEBHOOK_NAMESPACES", "value": "a,b"} in container["env"]

    # Webhook off: no webhook Service, no port, no webhook RBAC.
    objects = render(["webhook.enabled=false"])
    assert "sesame-webhook" not in {s["metadata"]["name"] for s in of_kind(objects, "Service")}
    assert of_kind(objects, "MutatingWebhookConfiguration") == []


def test_image_is_the_package_versions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == version
    [container] = deployment()["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/sesame-dev/sesame:{version}"
    digest = "sha256:" + "a" * 64
    [container] = deployment([f"image.digest={digest}"])["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/sesame-dev/sesame@{digest}"


def test_the_namespace_template_is_kept_for_the_cli_not_given_to_the_operator() -> None:
    """The template maps --project/--domain to a namespace for the CLI (DESIGN §1); the operator
    serves namespaces whatever their names and never reads it. The chart keeps it in its ConfigMap
    (NOTES tells CLI users to export it; test_helm_incluster.py does, against a live release)."""
    objects = render(["namespaceTemplate=team-{project}-{domain}"])
    [config] = of_kind(objects, "ConfigMap")
    assert config["data"] == {"namespaceTemplate": "team-{project}-{domain}"}
    [container] = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert "SESAME_NAMESPACE_TEMPLATE" not in {e["name"] for e in container["env"]}


class ReadingEnv(dict[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


# Read by what the operator runs on, not by Sesame's configuration: Python's tempfile, and Kopf's
# peering (the replica's identity).
READ_BY_THE_RUNTIME = {"TMPDIR", "POD_ID"}


@pytest.mark.parametrize(("combo", "values"), COMBOS, ids=COMBO_IDS)
def test_every_env_var_the_chart_sets_is_read_by_the_operator(combo: str, values: list[str]) -> None:
    """No dead configuration: each variable of the operator's container is one the operator reads
    (`OperatorConfig.from_env`, as `sesame operator run` calls it with the chart's --webhook)."""
    from sesame.config import OperatorConfig

    [container] = deployment(values)["spec"]["template"]["spec"]["containers"]
    env = ReadingEnv({e["name"]: e.get("value", "from-a-ref") for e in container["env"]})
    [webhook] = [arg.removeprefix("--webhook=") for arg in container["args"] if arg.startswith("--webhook=")]
    env["SESAME_WEBHOOK"] = webhook
    OperatorConfig.from_env(env)
    unread = {e["name"] for e in container["env"]} - env.asked - READ_BY_THE_RUNTIME
    assert unread == set(), f"the chart sets {sorted(unread)}, which the operator never reads"
