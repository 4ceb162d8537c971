from __future__ import annotations

import json

import pytest

from sesame.requests import MountRequirement, RequestError, parse_annotation, parse_requests


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
        ([{"key": ""}], "must not be empty"),
        ([{"key": "a", "envVar": "1BAD"}], "must start with a letter"),
        ([{"key": "a", "from": {"secret": "x"}}], "needs exactly 'secret' and 'key'"),
        ([{"key": "a", "from": {"secret": "../other", "key": "k"}}], "not a valid Secret name"),
        ([{"key": "a", "from": {"secret": "ns/name", "key": "k"}}], "not a valid Secret name"),
        ([{"key": "a"}, {"key": "a"}], "again"),
        ([{"key": "a", "containers": []}], "non-empty list"),
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
