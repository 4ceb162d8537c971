"""The one request shape: TaskRun entries, pod annotations and `sesame.Secret` parse to the same
requests, refuse the same mistakes (reserved env names included) with one clear line, and the CRD
carries the same reserved-name rule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import sesame
from sesame import naming
from sesame.requests import (
    RESERVED_ENV_VAR_PATTERN,
    MountRequirement,
    RequestError,
    Secret,
    SecretRequest,
    parse_annotation,
    parse_request,
    parse_requests,
)

ROOT = Path(__file__).resolve().parents[2]


def test_all_request_forms_parse() -> None:
    parsed = parse_requests(
        [
            {"key": "my_secret"},
            {"key": "api", "envVar": "UNION_API_KEY"},
            {"key": "f", "mountRequirement": "FILE"},
            {"key": "gcp_sa", "mountRequirement": "FILE", "envVar": "GOOGLE_APPLICATION_CREDENTIALS"},
            {"key": "db_password", "from": {"secret": "db-creds", "key": "password"}, "containers": ["main"]},
            {"key": "any", "mountRequirement": "ANY"},
        ]
    )
    assert parsed[0].env_var_name == "SESAME_SECRET_MY_SECRET"
    assert parsed[1].env_var_name == "UNION_API_KEY"
    assert parsed[2].is_file
    assert parsed[2].env_var_name is None
    assert parsed[3].env_var_name == "GOOGLE_APPLICATION_CREDENTIALS"
    assert (parsed[4].secret_name, parsed[4].data_key, parsed[4].containers) == (
        "db-creds",
        "password",
        ("main",),
    )
    assert parsed[5].mount_requirement is MountRequirement.ENV_VAR


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([{"key": "a", "mount": "FILE"}], "unknown field 'mount'"),
        ([{"key": "a", "mountRequirement": "VOLUME"}], "use ENV_VAR, FILE or ANY"),
        ([{"key": "a", "mountRequirement": ["FILE"]}], "use ENV_VAR, FILE or ANY"),
        ([{"key": ""}], "must not be empty"),
        ([{"key": 7}], "spec.secrets[0].key: a string is required"),
        ([{"key": "a", "envVar": "1BAD"}], "must start with a letter"),
        ([{"key": "a", "envVar": 3}], "spec.secrets[0].envVar: must be a string"),
        ([{"key": "a", "envVar": "PATH"}], "spec.secrets[0].envVar: env var name 'PATH' is reserved"),
        ([{"key": "a", "from": {"secret": "x"}}], "needs exactly 'secret' and 'key'"),
        ([{"key": "a", "from": {"secret": "x", "key": 1}}], "spec.secrets[0].from: needs a Secret name"),
        ([{"key": "a", "from": {"secret": "../other", "key": "k"}}], "not a valid Secret name"),
        ([{"key": "a", "from": {"secret": "ns/name", "key": "k"}}], "not a valid Secret name"),
        ([{"key": "a"}, {"key": "a"}], "again"),
        ([{"key": "a", "containers": []}], "non-empty list"),
        ([{"key": "a", "containers": "main"}], "non-empty list"),
        ("nope", "must be a list"),
        ([42], "must be an object"),
    ],
)
def test_bad_requests_get_one_clear_line(raw: object, fragment: str) -> None:
    with pytest.raises(RequestError) as error:
        parse_requests(raw)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_annotation_json_errors_are_clear() -> None:
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_annotation("[{")
    with pytest.raises(RequestError, match="missing"):
        parse_annotation(None)
    assert parse_annotation(json.dumps([{"key": "k"}]))[0].key == "k"


def test_requests_render_back_to_their_spec() -> None:
    raw = [{"key": "gcp_sa", "envVar": "G", "mountRequirement": "FILE", "containers": ["a"]}]
    assert [r.to_spec() for r in parse_requests(raw)] == raw


# -- one shape: sesame.Secret is the operator's request ----------------------------------------------


def test_the_sdk_secret_is_the_operators_request_and_its_mount_type() -> None:
    assert sesame.Secret is Secret is SecretRequest
    assert sesame.Secret.MountType is MountRequirement
    assert sesame.Secret.MountType.FILE.value == "FILE"
    assert [m.value for m in sesame.Secret.MountType] == ["ENV_VAR", "FILE", "ANY"]


@pytest.mark.parametrize(
    ("secret", "spec"),
    [
        (Secret(key="my_secret"), {"key": "my_secret"}),
        (Secret(key="k", env_var="UNION_API_KEY"), {"key": "k", "envVar": "UNION_API_KEY"}),
        (Secret(key="f", mount_requirement=Secret.MountType.FILE), {"key": "f", "mountRequirement": "FILE"}),
        (Secret(key="f", mount_requirement="FILE"), {"key": "f", "mountRequirement": "FILE"}),  # type: ignore[arg-type]
        (Secret(key="a", mount_requirement=Secret.MountType.ANY), {"key": "a"}),  # ANY means ENV_VAR
        (
            Secret(
                key="gcp_sa",
                mount_requirement=Secret.MountType.FILE,
                env_var="GOOGLE_APPLICATION_CREDENTIALS",
                containers=["main", "main", "side"],  # type: ignore[arg-type]
            ),
            {
                "key": "gcp_sa",
                "envVar": "GOOGLE_APPLICATION_CREDENTIALS",
                "mountRequirement": "FILE",
                "containers": ["main", "side"],
            },
        ),
        (
            Secret(key="db_password", from_secret="db-creds", from_key="password"),
            {"key": "db_password", "from": {"secret": "db-creds", "key": "password"}},
        ),
    ],
)
def test_secret_to_request_and_back(secret: Secret, spec: dict[str, Any]) -> None:
    assert secret.to_request() == spec
    assert parse_request(spec, "spec.secrets[0]") == secret
    assert parse_annotation(json.dumps([spec])) == [secret]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "bad key"}, "sesame.Secret(key='bad key') key: secret key 'bad key' may only contain"),
        ({"key": "-lead"}, "start and end with a letter or digit"),
        ({"key": "ok", "env_var": ""}, "sesame.Secret(key='ok') env_var: env var name '' must start"),
        ({"key": "ok", "env_var": "1BAD"}, "env var name '1BAD'"),
        ({"key": "ok", "env_var": "LD_PRELOAD"}, "Secret(key='ok') env_var: env var name 'LD_PRELOAD' is"),
        ({"key": "ok", "mount_requirement": "SOMETIMES"}, "mount_requirement is 'SOMETIMES'; use ENV_VAR"),
        ({"key": "ok", "containers": ()}, "containers: must be a non-empty list"),
        ({"key": "ok", "containers": "main"}, "containers: must be a non-empty list"),
        ({"key": "ok", "from_secret": "db-creds"}, "from_secret/from_key: needs a Secret name and"),
        ({"key": "ok", "from_secret": "Db_Creds", "from_key": "p"}, "'Db_Creds' is not a valid Secret name"),
    ],
)  # fmt: skip
def test_invalid_secrets_fail_when_written(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as caught:
        Secret(**kwargs)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


KEYS = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,20}[A-Za-z0-9])?", fullmatch=True)
ENV_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: not re.fullmatch(RESERVED_ENV_VAR_PATTERN, n)
)
CONTAINERS = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True), min_size=1, max_size=3)


@given(
    key=KEYS,
    env_var=st.none() | ENV_NAMES,
    mount=st.sampled_from(list(MountRequirement)),
    source=st.none() | st.tuples(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True), KEYS),
    containers=st.none() | CONTAINERS,
)
def test_any_valid_secret_round_trips_through_its_request(
    key: str,
    env_var: str | None,
    mount: MountRequirement,
    source: tuple[str, str] | None,
    containers: list[str] | None,
) -> None:
    secret = Secret(
        key=key,
        env_var=env_var,
        mount_requirement=mount,
        from_secret=source[0] if source else None,
        from_key=source[1] if source else None,
        containers=None if containers is None else tuple(containers),
    )
    spec = secret.to_request()
    parsed = parse_request(json.loads(json.dumps(spec)), "spec.secrets[0]")
    assert parsed == secret
    assert parsed.to_spec() == spec
    assert set(spec) <= {"key", "envVar", "mountRequirement", "from", "containers"}


# -- reserved env var names ---------------------------------------------------------------------------

REFUSED = [
    "PATH", "path", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "HOSTNAME", "TMPDIR", "IFS",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "ld_audit", "DYLD_INSERT_LIBRARIES", "GLIBC_TUNABLES", "GCONV_PATH",
    "BASH_ENV", "ENV", "PS4", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS", "PERL5OPT", "RUBYOPT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "http_proxy", "HTTP_PROXY", "https_proxy", "ALL_PROXY", "no_proxy",
    "KUBERNETES_SERVICE_HOST", "KUBERNETES_PORT", "SESAME_SECRETS_DIR", "SESAME_SECRETS_ENV_VARS",
    "SESAME_SECRET_MY_SECRET",
]  # fmt: skip
ALLOWED = [
    "UNION_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "MY_PATH", "PATHS", "HOMEPAGE_TOKEN", "LDAP_PASSWORD",
    "PY_TOKEN", "SESAME", "SESAMEKEY", "PROXY_PASSWORD", "HTTP_PROXY_PASSWORD", "DB_USER", "ENVIRONMENT",
    "KUBECONFIG_DATA", "SSL_KEY", "_",
]  # fmt: skip


@pytest.mark.parametrize("name", REFUSED)
def test_reserved_env_names_are_refused_everywhere_a_request_is_written(name: str) -> None:
    reason = f"env var name {name!r} is reserved"
    with pytest.raises(RequestError, match=re.escape(f"spec.secrets[0].envVar: {reason}")):
        parse_requests([{"key": "k", "envVar": name}])
    with pytest.raises(
        RequestError, match=re.escape(f"annotation {naming.SECRETS_ANNOTATION}[0].envVar: {reason}")
    ):
        parse_annotation(json.dumps([{"key": "k", "envVar": name, "mountRequirement": "FILE"}]))
    with pytest.raises(RequestError, match=re.escape(f"sesame.Secret(key='k') env_var: {reason}")):
        sesame.Secret(key="k", env_var=name)


@pytest.mark.parametrize("name", ALLOWED)
def test_names_that_only_look_reserved_are_allowed(name: str) -> None:
    assert parse_requests([{"key": "k", "envVar": name}])[0].env_var_name == name
    assert sesame.Secret(key="k", env_var=name).env_var == name


def test_the_crd_refuses_the_same_reserved_names() -> None:
    """Both copies of the CRD carry the reserved-name pattern in a CEL rule on envVar, verbatim."""
    for path in (ROOT / "crds" / "taskrun.yaml", ROOT / "charts" / "sesame" / "crds" / "taskrun.yaml"):
        crd = yaml.safe_load(path.read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        env_var = schema["properties"]["spec"]["properties"]["secrets"]["items"]["properties"]["envVar"]
        rules = [rule["rule"] for rule in env_var["x-kubernetes-validations"]]
        assert rules == [f"!self.matches('{RESERVED_ENV_VAR_PATTERN}')"], path
    # RE2 (CEL) and Python read the pattern alike only without Python-only syntax.
    assert re.fullmatch(r"\(\?i\)\^\([A-Z0-9_.*|]+\)\$", RESERVED_ENV_VAR_PATTERN)
