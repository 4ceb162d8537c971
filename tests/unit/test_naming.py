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


# Kubernetes' own rules, as its API reference states them (not Sesame's code): a Secret's name is a
# DNS subdomain, a data key is made of letters, digits, '-', '_' and '.' and is not '.', '..' or
# '..'-prefixed; both at most 253 characters.
K8S_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
K8S_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def kubernetes_takes(key: str) -> bool:
    """Would Kubernetes store the Secret `key` names (DESIGN §1: its DNS form, `key` as data key)?"""
    name = expected_object_name(key)
    valid_name = len(name) <= 253 and K8S_DNS_SUBDOMAIN.fullmatch(name) is not None
    valid_data_key = (
        len(key) <= 253
        and K8S_DATA_KEY.fullmatch(key) is not None
        and key not in (".", "..")
        and not key.startswith("..")
    )
    return valid_name and valid_data_key


@given(st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=80))
def test_a_key_is_accepted_exactly_when_kubernetes_can_store_it(key: str) -> None:
    assert (naming.key_problem(key) is None) == kubernetes_takes(key), key
    if naming.key_problem(key) is not None:
        return
    assert naming.secret_object_name(key) == expected_object_name(key)
    assert naming.default_env_var(key) == expected_env_var(key)
    assert naming.secret_file_path(key) == "/etc/sesame/secrets/" + key


@given(st.text(alphabet=ALNUM, min_size=1, max_size=30), st.sampled_from(["_", "-"]))
def test_spellings_that_share_an_object_name_map_to_it(stem: str, sep: str) -> None:
    key = f"{stem}{sep}x"
    shared = stem.lower() + "-x"  # lower-case, '_' → '-'
    for spelling in (key, key.upper(), key.lower(), f"{stem}_x", f"{stem.upper()}-X"):
        assert naming.secret_object_name(spelling) == shared


# -- one key, one secret ---------------------------------------------------------------------------
# Expected names are computed here, character by character, from the rules as users read them
# (Secret name: lower-case, `_` → `-`; env var: SESAME_SECRET_ + upper-case, other characters → `_`).


def expected_object_name(key: str) -> str:
    return "".join("-" if char == "_" else char.lower() for char in key)


def expected_env_var(key: str) -> str:
    return "SESAME_SECRET_" + "".join(char.upper() if char in ALNUM else "_" for char in key)


def share_a_name(one: str, other: str) -> bool:
    same_object = expected_object_name(one) == expected_object_name(other)
    return same_object or expected_env_var(one) == expected_env_var(other)


# Valid keys: alphanumeric parts joined by one of `_`, `-`, `.` (so the Secret name is a DNS name).
PARTS = st.lists(st.text(alphabet=ALNUM, min_size=1, max_size=5), min_size=1, max_size=4)
SEPARATOR = st.sampled_from("_-.")


@st.composite
def keys(draw: st.DrawFn) -> str:
    parts = draw(PARTS)
    return parts[0] + "".join(draw(SEPARATOR) + part for part in parts[1:])


@st.composite
def respelled(draw: st.DrawFn, key: str) -> str:
    """`key` with the case of some letters and some separators changed: the likely clashes."""
    chars = []
    for char in key:
        if char in "_-." and draw(st.booleans()):
            chars.append(draw(SEPARATOR))
        elif char.isalpha() and draw(st.booleans()):
            chars.append(char.swapcase())
        else:
            chars.append(char)
    return "".join(chars)


@st.composite
def key_pairs(draw: st.DrawFn) -> tuple[str, str]:
    first = draw(keys())
    second = draw(st.one_of(keys(), respelled(first)))
    return first, second


@pytest.mark.parametrize(
    ("stored", "new", "shared"),
    [
        ("my_secret", "my.secret", "env var 'SESAME_SECRET_MY_SECRET'"),  # the reported case
        ("my.secret", "my-secret", "env var 'SESAME_SECRET_MY_SECRET'"),
        ("my_secret", "MY_SECRET", "Secret 'my-secret'"),
        ("my_secret", "my-secret", "Secret 'my-secret'"),
        ("a.b", "A.B", "Secret 'a.b'"),
    ],
)
def test_keys_that_share_a_name_clash(stored: str, new: str, shared: str) -> None:
    assert naming.clashing_key(new, [stored]) == (stored, shared)
    assert naming.clashing_key(stored, [new]) is not None


def test_a_free_key_and_the_same_key_again_do_not_clash() -> None:
    assert naming.clashing_key("my_secret", ["ab", "my_secret2", "mysecret"]) is None
    assert naming.clashing_key("my_secret", ["my_secret"]) is None  # the same secret: `already exists`
    assert naming.clashing_key("a_b", ["zz", "A-B", "a.b"]) == ("A-B", "Secret 'a-b'")  # the first, sorted


@given(key_pairs())
def test_two_keys_deliver_apart_or_the_second_is_refused(pair: tuple[str, str]) -> None:
    first, second = pair
    for key in pair:  # both valid, named as the rules say
        assert naming.key_problem(key) is None
        assert naming.secret_object_name(key) == expected_object_name(key)
        assert naming.default_env_var(key) == expected_env_var(key)
    clash = naming.clashing_key(second, [first])
    if first == second:
        assert clash is None  # the same key: create says it already exists
    elif share_a_name(first, second):
        assert clash is not None
        assert clash[0] == first
    else:
        assert clash is None
        assert expected_object_name(first) != expected_object_name(second)
        assert expected_env_var(first) != expected_env_var(second)


@given(st.lists(st.one_of(keys(), keys().flatmap(respelled)), max_size=12))
def test_what_gets_stored_is_one_secret_per_name(candidates: list[str]) -> None:
    """Store keys one by one as `sesame create secret` does: whatever is kept has pairwise
    distinct Secret names and env var names, and every refused key shares one with a kept key."""
    stored: list[str] = []
    for key in candidates:
        if key in stored:
            continue
        clash = naming.clashing_key(key, stored)
        if clash is None:
            stored.append(key)
        else:
            assert clash[0] in stored
            assert share_a_name(key, clash[0])
    assert len({expected_object_name(key) for key in stored}) == len(stored)
    assert len({expected_env_var(key) for key in stored}) == len(stored)
