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
            {"key": "db_ca", "mountRequirement": "FILE", "from": {"secret": "db-creds", "key": "ca.crt"}},
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
    setup = env_of(spec["initContainers"][0])
    assert setup["SESAME_SECRET_MY_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-secret",
        "key": "my_secret",
        "optional": False,
    }
    assert setup["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/etc/sesame/secrets/gcp_sa"
    assert "SESAME_SECRET_DB_PASSWORD" not in setup
    # One projected volume with one item per FILE request: the Secret, its data key, the file name
    # (the key, case kept) and the mode; every container and init container mounts it read-only.
    (volume,) = spec["volumes"]
    assert volume == {
        "name": "sesame-secrets",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "secret": {
                        "name": "my-file-secret",
                        "items": [{"key": "my_file_secret", "path": "my_file_secret", "mode": 0o440}],
                        "optional": False,
                    }
                },
                {
                    "secret": {
                        "name": "gcp-sa",
                        "items": [{"key": "gcp_sa", "path": "gcp_sa", "mode": 0o440}],
                        "optional": False,
                    }
                },
                {  # `from`: the Secret's own data key, the file named after the request's key
                    "secret": {
                        "name": "db-creds",
                        "items": [{"key": "ca.crt", "path": "db_ca", "mode": 0o440}],
                        "optional": False,
                    }
                },
            ],
        },
    }
    for container in spec["containers"] + spec["initContainers"]:
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/sesame/secrets"]
        assert mounts == [{"name": "sesame-secrets", "mountPath": "/etc/sesame/secrets", "readOnly": True}]
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
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=1, max_size=4, unique=True
)
Scenario = tuple[dict[str, Any], list[dict[str, Any]], list[SecretRequest]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A pod (some of its containers init containers) and requests for it, as written and parsed."""
    names = draw(CONTAINERS)
    init = tuple(names[: draw(st.integers(0, len(names) - 1))])
    keys = draw(st.lists(KEYS, min_size=0, max_size=6, unique_by=lambda k: k.lower().replace("_", "-")))
    raw = []
    for key in keys:
        entry: dict[str, Any] = {"key": key}
        if draw(st.booleans()):
            entry["mountRequirement"] = draw(st.sampled_from(["ENV_VAR", "FILE", "ANY"]))
        if draw(st.booleans()):
            entry["envVar"] = "CUSTOM_" + key.upper()
        if draw(st.booleans()):
            entry["from"] = {"secret": "shared", "key": f"data.{key}"}
        if draw(st.booleans()):
            entry["containers"] = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        raw.append(entry)
    try:
        requests = parse_requests(raw)
    except RequestError:
        assume(False)
        raise
    return pod(*[n for n in names if n not in init], init=init), raw, requests


def wanted(entry: dict[str, Any]) -> tuple[str, str, str | None]:
    """(Secret, data key, env var) of a request, by DESIGN's rules written out here: the Secret is
    the key's DNS form (or `from`), the default env var SESAME_SECRET_ + the key upper-cased."""
    source = entry.get("from")
    secret = source["secret"] if source else entry["key"].lower().replace("_", "-")
    data_key = source["key"] if source else entry["key"]
    if entry.get("mountRequirement") == "FILE":
        return secret, data_key, entry.get("envVar")
    return secret, data_key, entry.get("envVar") or "SESAME_SECRET_" + entry["key"].upper()


@settings(max_examples=300)
@given(scenarios())
def test_injection_is_idempotent_and_delivers_every_request(scenario: Scenario) -> None:
    spec, raw, requests = scenario
    inventory = inventory_for(requests)
    once = inject(spec, requests, inventory, NS)
    assume(once.ok)  # custom env var names can legitimately clash
    assert once.pod_spec is not None
    twice = inject(once.pod_spec, requests, inventory, NS)
    assert twice.ok
    assert twice.pod_spec == once.pod_spec
    containers = {c["name"]: c for f in ("initContainers", "containers") for c in once.pod_spec.get(f, [])}
    volumes = {v["name"]: v for v in once.pod_spec.get("volumes", [])}
    for name, container in containers.items():
        mine = [entry for entry in raw if name in entry.get("containers", containers)]
        env = env_of(container)
        files = [entry for entry in mine if entry.get("mountRequirement") == "FILE"]
        refs = {
            (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in env.values()
            if "valueFrom" in e
        }
        by_env = [wanted(entry) for entry in mine if entry not in files]
        assert refs == {(env_var, secret, data_key) for secret, data_key, env_var in by_env}
        for entry in files:
            path_env = wanted(entry)[2]
            if path_env:
                assert env[path_env] == {"name": path_env, "value": f"/etc/sesame/secrets/{entry['key']}"}
        # The projected items this container sees: exactly its FILE requests (key, path, mode).
        mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/etc/sesame/secrets"]
        items = {
            (source["secret"]["name"], item["key"], item["path"], item["mode"])
            for mount in mounts
            for source in volumes[mount["name"]]["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        assert items == {(wanted(e)[0], wanted(e)[1], e["key"], 0o440) for e in files}
        assert all(m["readOnly"] is True and "subPath" not in m for m in mounts)
        assert len(mounts) == (1 if files else 0)


@settings(max_examples=200)
@given(scenarios())
def test_only_references_enter_the_pod_spec(scenario: Scenario) -> None:
    """The inventory holds names only; the output holds secretKeyRefs, paths and names, nothing else."""
    spec, _, requests = scenario
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
def test_a_missing_secret_never_yields_a_pod(scenario: Scenario) -> None:
    spec, _, requests = scenario
    assume(requests)
    inventory = inventory_for(requests)
    del inventory[requests[0].secret_name]
    result = inject(spec, requests, inventory, NS)
    assert result.pod_spec is None
    assert any(p.reason is Reason.SECRET_NOT_FOUND for p in result.problems)
