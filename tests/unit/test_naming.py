from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesame import naming

KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("my_secret", "my-secret"),
        ("MY_SECRET", "my-secret"),
        ("my-secret", "my-secret"),
        ("gcp.sa", "gcp.sa"),
    ],
)
def test_secret_object_name_is_the_dns_form(key: str, name: str) -> None:
    assert naming.secret_object_name(key) == name


@pytest.mark.parametrize(
    "key", ["", "-lead", "trail_", "a..b", "a._b", "..x", "has space", "ü", "a/b", "x" * 254]
)
def test_invalid_keys_are_refused_with_a_reason(key: str) -> None:
    problem = naming.key_problem(key)
    assert problem is not None
    assert "\n" not in problem
    with pytest.raises(naming.NamingError):
        naming.secret_object_name(key)


@pytest.mark.parametrize(
    ("key", "env"),
    [
        ("my_secret", "SESAME_SECRET_MY_SECRET"),
        ("gcp.sa-key", "SESAME_SECRET_GCP_SA_KEY"),
        ("A1", "SESAME_SECRET_A1"),
    ],
)
def test_default_env_var(key: str, env: str) -> None:
    assert naming.default_env_var(key) == env


def test_namespace_template() -> None:
    assert naming.namespace_for("my_project", "development") == "my-project-development"
    assert naming.namespace_for("P", "d", "team-{project}-{domain}") == "team-p-d"
    with pytest.raises(naming.NamingError, match="not a valid namespace"):
        naming.namespace_for("my project", "d")
    with pytest.raises(naming.NamingError, match="template"):
        naming.namespace_for("p", "d", "{tenant}-{project}")


@given(st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=80))
def test_every_accepted_key_maps_to_valid_kubernetes_names(key: str) -> None:
    if naming.key_problem(key) is not None:
        return
    name = naming.secret_object_name(key)
    assert naming.object_name_problem(name) is None
    assert naming.data_key_problem(key) is None
    assert re.fullmatch(r"SESAME_SECRET_[A-Z0-9_]+", naming.default_env_var(key))
    assert naming.secret_file_path(key).endswith("/" + key)


@given(st.text(alphabet=ALNUM, min_size=1, max_size=30), st.sampled_from(["_", "-", "."]))
def test_spellings_that_share_an_object_name_are_detectable(stem: str, sep: str) -> None:
    key = f"{stem}{sep if sep != '.' else '_'}x"
    assert naming.secret_object_name(key.upper()) == naming.secret_object_name(key.lower())
