"""The chart's values beyond RBAC, rendered offline (`helm template`): the NetworkPolicy, bind
addresses, probes, values the chart refuses with one line, and the documented ways to pass a
namespace template. The checks that need a cluster (CRDs, cert-manager, missing namespaces, a
second release) run in tests/integration/test_helm_incluster.py against the real API server.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from tests.unit.test_chart_rbac import CHART, KUBE_VERSION, ROOT, deployment, helm, of_kind, render

PEER = {"ipBlock": {"cidr": "192.0.2.10/32"}}  # what test_chart_rbac.API_SERVER_PEER sets


def container(values: Sequence[str] = ()) -> Mapping[str, Any]:
    [found] = deployment(values)["spec"]["template"]["spec"]["containers"]
    return found


def env(values: Sequence[str] = ()) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(values)["env"]}


def template(*args: str) -> subprocess.CompletedProcess[str]:
    """`helm template` with exactly these arguments (no defaults added)."""
    command = [
        helm(),
        "template",
        "sesame",
        str(CHART),
        "-n",
        "sesame-system",
        "--kube-version",
        KUBE_VERSION,
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """Helm's error: one line (Helm itself adds a hint line about --debug after it)."""
    assert result.returncode != 0, "accepted"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert all("--debug" in line for line in lines[1:]), result.stderr
    return lines[0]


def test_network_policy_admits_only_the_api_server_to_the_webhook() -> None:
    [policy] = of_kind(render(), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sesame",
        "app.kubernetes.io/instance": "sesame",
    }
    assert spec["policyTypes"] == ["Ingress"]  # egress (to the API server) is not restricted
    webhook, metrics = spec["ingress"]
    assert webhook == {"ports": [{"port": "webhook", "protocol": "TCP"}], "from": [PEER]}
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [PEER]}
    # The named ports exist on the container; the health port has no rule (probes come from the node).
    assert {p["name"] for p in container()["ports"]} == {"health", "metrics", "webhook"}

    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    [policy] = of_kind(
        render(
            [
                "webhook.enabled=false",
                "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels."
                "kubernetes\\.io/metadata\\.name=monitoring",
            ]
        ),
        "NetworkPolicy",
    )
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [PEER, prometheus]}
    ]
    assert of_kind(render(["networkPolicy.enabled=false"]), "NetworkPolicy") == []


def test_offline_render_without_the_api_servers_addresses_says_what_to_set() -> None:
    line = error_line(template())
    assert "networkPolicy.apiServer: without a cluster to ask (helm template, helm lint, Argo CD)" in line
    assert "networkPolicy.enabled=false" in line
    assert template("--set", "networkPolicy.enabled=false").returncode == 0


def test_bind_addresses_reach_the_operator() -> None:
    assert "--liveness=http://0.0.0.0:8080/healthz" in container()["args"]
    assert env()["SESAME_METRICS_ADDR"] == "0.0.0.0"  # noqa: S104 (the chart's default, checked)
    values = ["health.bindAddress=::", "health.port=8081", "metrics.bindAddress=127.0.0.1"]
    assert "--liveness=http://[::]:8081/healthz" in container(values)["args"]
    assert env(values)["SESAME_METRICS_ADDR"] == "127.0.0.1"
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in container(values)["ports"]


def test_probes_restart_a_hung_operator_within_about_half_a_minute() -> None:
    probes = container()
    liveness, readiness = probes["livenessProbe"], probes["readinessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] == 30
    assert liveness["terminationGracePeriodSeconds"] == 10
    assert readiness["periodSeconds"] * readiness["failureThreshold"] == 10


def test_peering_replicas_are_named_by_their_pod() -> None:
    """Kopf's peering identity is POD_ID: the leader in a KopfPeering's status is a pod's name."""
    assert "POD_ID" not in env()
    peering = env(["replicas=2", "webhook.enabled=false"])
    assert peering["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["watchNamespaces={team-a,kube-system}"],
            "watchNamespaces: kube-system is never served: TaskRuns there would run beside",
        ),
        (["watchNamespaces={kube-node-lease}"], "watchNamespaces: kube-node-lease is never served"),
        (["watchNamespaces={kube-public}"], "watchNamespaces: kube-public is never served"),
        (["watchNamespaces={sesame-system}"], "watchNamespaces: sesame-system is never served"),
        (["health.bindAddress=127.0.0.1"], "health.bindAddress: 127.0.0.1 is a loopback address"),
    ],
)
def test_values_that_cannot_work_stop_the_render_in_one_line(values: list[str], message: str) -> None:
    args = [arg for value in values for arg in ("--set", value)]
    line = error_line(template("--set", "networkPolicy.enabled=false", *args))
    assert message in line, line


# The forms values.yaml and the README document for a template that starts with `{`.
DOCUMENTED_FORMS = [
    "--set-literal namespaceTemplate='{domain}-{project}'",
    "--set-json 'namespaceTemplate=\"{domain}-{project}\"'",
]


@pytest.mark.parametrize("form", DOCUMENTED_FORMS)
def test_documented_namespace_template_forms_work(form: str) -> None:
    """`--set namespaceTemplate='{domain}-{project}'` fails in Helm's parser (values.yaml says so);
    the forms documented instead, run exactly as written there, put the template in the ConfigMap."""
    for path in ("charts/sesame/values.yaml", "README.md"):
        assert form in (ROOT / path).read_text(), f"{path} does not document {form}"
    result = template("--set", "networkPolicy.enabled=false", *shlex.split(form))
    assert result.returncode == 0, result.stderr
    [config] = of_kind([d for d in yaml.safe_load_all(result.stdout) if d], "ConfigMap")
    assert config["data"] == {"namespaceTemplate": "{domain}-{project}"}

    broken = template("--set", "networkPolicy.enabled=false", "--set", "namespaceTemplate={domain}-{project}")
    assert 'key "-{project}" has no value' in error_line(broken)  # what values.yaml warns about
