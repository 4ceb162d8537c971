from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sesame import naming
from sesame.injection import Reason, SecretFacts, direct_secret_references, inject
from sesame.requests import RequestError, SecretRequest, parse_requests

NS = "p-d"


def pod(*names: str, init: tuple[str, ...] = (), env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": n, "image": "img", **({"env": env} if env else {})} for n in names]
    }
    if init:
        spec["initContainers"] = [{"name": n, "image": "img"} for n in init]
    return spec


def inventory_for(requests: list[SecretRequest]) -> dict[str, SecretFacts]:
    inventory: dict[str, set[str]] = {}
    for request in requests:
        inventory.setdefault(request.secret_name, set()).add(request.data_key)
    return {name: SecretFacts(frozenset(keys)) for name, keys in inventory.items()}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_request_form() -> None:
    requests = parse_requests(
        [
            {"key": "my_secret"},
            {"key": "api", "envVar": "UNION_API_KEY"},
            {"key": "my_file_secret", "mountRequirement": "FILE"},
            {"key": "gcp_sa", "mountRequirement": "FILE", "envVar": "GOOGLE_APPLICATION_CREDENTIALS"},
            {"key": "db_password", "from": {"secret": "db-creds", "key": "password"}, "containers": ["main"]},
        ]
    )
    result = inject(pod("main", "sidecar", init=("setup",)), requests, inventory_for(requests), NS)
    assert result.ok, result.problems
    spec = result.pod_spec
    assert spec is not None
    main = env_of(spec["containers"][0])
    assert main["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-secret",
        "key": "my_secret",
        "optional": False,
    }
    assert main["UNION_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "api"
    assert main["GOOGLE_APPLICATION_CREDENTIALS"] == {
        "name": "GOOGLE_APPLICATION_CREDENTIALS",
        "value": "/etc/sesame/secrets/gcp_sa",
    }
    assert main["SESAME_SECRET_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "db-creds",
        "key": "password",
        "optional": False,
    }
    assert json.loads(main[naming.ENV_VARS_ENV]["value"])["api"] == "UNION_API_KEY"
    sidecar = env_of(spec["containers"][1])
    assert "SESAME_SECRET_DB_PASSWORD" not in sidecar  # containers: [main]
    assert "SESAME_SECRET_MY_SECRET" in env_of(spec["initContainers"][0])
    (volume,) = spec["volumes"]
    items = {i["path"]: i for s in volume["projected"]["sources"] for i in s["secret"]["items"]}
    assert set(items) == {"my_file_secret", "gcp_sa"}
    assert all(i["mode"] == 0o440 for i in items.values())
    for container in spec["containers"] + spec["initContainers"]:
        mount = {m["mountPath"]: m for m in container["volumeMounts"]}["/etc/sesame/secrets"]
        assert mount["readOnly"] is True
        assert "subPath" not in mount
    assert {d.key: d.delivery for d in result.deliveries}["gcp_sa"] == "file"


def test_missing_secret_and_key_are_problems_with_the_fix() -> None:
    requests = parse_requests([{"key": "a"}, {"key": "b"}])
    result = inject(pod("main"), requests, {"b": SecretFacts(frozenset({"other"}))}, NS)
    assert result.pod_spec is None
    reasons = [p.reason for p in result.problems]
    assert reasons == [Reason.SECRET_NOT_FOUND, Reason.KEY_NOT_FOUND]
    assert "sesame create secret --namespace p-d a" in result.problems[0].message


def test_env_clash_between_requests_and_with_the_container() -> None:
    requests = parse_requests([{"key": "a", "envVar": "X"}, {"key": "b", "envVar": "X"}])
    result = inject(pod("main"), requests, inventory_for(requests), NS)
    assert [p.reason for p in result.problems] == [Reason.ENV_VAR_CLASH]
    requests = parse_requests([{"key": "a", "envVar": "APP_HOME"}])  # HOME itself is reserved
    result = inject(
        pod("main", env=[{"name": "APP_HOME", "value": "/app"}]), requests, inventory_for(requests), NS
    )
    assert [p.reason for p in result.problems] == [Reason.ENV_VAR_CLASH]
    assert "already sets env var 'APP_HOME'" in result.problems[0].message


def test_unknown_container_is_a_problem() -> None:
    requests = parse_requests([{"key": "a", "containers": ["nope"]}])
    result = inject(pod("main"), requests, inventory_for(requests), NS)
    assert [p.reason for p in result.problems] == [Reason.UNKNOWN_CONTAINER]


def test_non_root_pods_can_read_their_files() -> None:
    requests = parse_requests([{"key": "f", "mountRequirement": "FILE"}])
    spec = {**pod("main"), "securityContext": {"runAsUser": 1000}}
    result = inject(spec, requests, inventory_for(requests), NS)
    assert result.pod_spec is not None
    assert result.pod_spec["securityContext"]["fsGroup"] == 1000


def test_template_secret_references_are_found() -> None:
    spec = pod("main", env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    spec["volumes"] = [{"name": "v", "secret": {"secretName": "s"}}]
    assert len(direct_secret_references(spec)) == 2
    assert direct_secret_references(pod("main")) == []


# --- properties ---------------------------------------------------------------------------------

KEYS = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}[A-Za-z0-9]", fullmatch=True)
CONTAINERS = st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1, max_size=3, unique=True
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], list[SecretRequest]]:
    names = draw(CONTAINERS)
    keys = draw(st.lists(KEYS, min_size=0, max_size=6, unique_by=lambda k: k.lower().replace("_", "-")))
    raw = []
    for key in keys:
        entry: dict[str, Any] = {"key": key}
        if draw(st.booleans()):
            entry["mountRequirement"] = draw(st.sampled_from(["ENV_VAR", "FILE", "ANY"]))
        if draw(st.booleans()):
            entry["envVar"] = "CUSTOM_" + key.upper()
        if draw(st.booleans()):
            entry["from"] = {"secret": "shared", "key": key}
        if draw(st.booleans()):
            entry["containers"] = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        raw.append(entry)
    try:
        requests = parse_requests(raw)
    except RequestError:
        assume(False)
        raise
    return pod(*names), requests


@settings(max_examples=300)
@given(scenarios())
def test_injection_is_idempotent_and_delivers_every_request(
    scenario: tuple[dict[str, Any], list[SecretRequest]],
) -> None:
    spec, requests = scenario
    inventory = inventory_for(requests)
    once = inject(spec, requests, inventory, NS)
    assume(once.ok)  # custom env var names can legitimately clash
    assert once.pod_spec is not None
    twice = inject(once.pod_spec, requests, inventory, NS)
    assert twice.ok
    assert twice.pod_spec == once.pod_spec
    containers = {c["name"]: c for c in once.pod_spec["containers"]}
    for request in requests:
        for target in request.containers or tuple(containers):
            env = env_of(containers[target])
            if request.is_file:
                mounts = {m["mountPath"] for m in containers[target].get("volumeMounts", [])}
                assert naming.SECRETS_DIR in mounts
            else:
                ref = env[request.env_var_name or ""]["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == (request.secret_name, request.data_key)
                assert "namespace" not in ref


@settings(max_examples=200)
@given(scenarios())
def test_only_references_enter_the_pod_spec(scenario: tuple[dict[str, Any], list[SecretRequest]]) -> None:
    """The inventory holds names only; the output holds secretKeyRefs, paths and names, nothing else."""
    spec, requests = scenario
    result = inject(spec, requests, inventory_for(requests), NS)
    for container in (result.pod_spec or {}).get("containers", []):
        for env in container.get("env", []):
            if "valueFrom" in env:
                assert set(env["valueFrom"]) == {"secretKeyRef"}
            elif env["name"] == naming.ENV_VARS_ENV:
                assert set(json.loads(env["value"])) <= {r.key for r in requests}
            else:
                assert env["value"].startswith("/etc/sesame/secrets") or env["name"].startswith(
                    "SESAME_SECRETS_"
                )


@settings(max_examples=200)
@given(scenarios())
def test_a_missing_secret_never_yields_a_pod(scenario: tuple[dict[str, Any], list[SecretRequest]]) -> None:
    spec, requests = scenario
    assume(requests)
    inventory = inventory_for(requests)
    del inventory[requests[0].secret_name]
    result = inject(spec, requests, inventory, NS)
    assert result.pod_spec is None
    assert any(p.reason is Reason.SECRET_NOT_FOUND for p in result.problems)
