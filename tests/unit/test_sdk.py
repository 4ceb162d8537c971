"""The task-side SDK: finds a secret however it was delivered — in a pod only through the names the
operator wrote, elsewhere at one documented place — fails with a message that says what to add, and
never puts a value in an exception."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sesame
from sesame import naming
from sesame.requests import RequestError, Secret
from sesame.sdk import SecretDeliveryError, SecretNotFoundError, Secrets, taskrun_manifest

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Valid keys by construction (DESIGN §1): letters and digits, with single '-', '_' or '.' between them.
valid_keys = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    st.text(ALNUM, min_size=1, max_size=12),
    st.lists(st.tuples(st.sampled_from("-_."), st.text(ALNUM, min_size=1, max_size=12)), max_size=4),
)
VALUE = "s3cr3t-value"


def default_env(key: str) -> str:
    """DESIGN §3, written out: SESAME_SECRET_ + the key upper-cased, other characters → '_'."""
    return "SESAME_SECRET_" + "".join(char.upper() if char in ALNUM else "_" for char in key)


def test_get_reads_the_default_env_var() -> None:
    secrets = Secrets({"SESAME_SECRET_MY_SECRET": VALUE})
    assert secrets.get(key="my_secret") == VALUE


def test_get_reads_a_custom_env_var_through_the_names_map() -> None:
    environ = {
        naming.ENV_VARS_ENV: json.dumps({"my_union_api_key": "UNION_API_KEY"}),
        "UNION_API_KEY": VALUE,
    }
    assert Secrets(environ).get(key="my_union_api_key") == VALUE


def test_in_a_pod_a_key_is_found_only_through_the_names_map() -> None:
    """Issue 14: a pod that requested only `my.secret` must not hand its value out as `my_secret`,
    although both keys default to the env var SESAME_SECRET_MY_SECRET."""
    pod = {
        naming.ENV_VARS_ENV: json.dumps({"my.secret": "SESAME_SECRET_MY_SECRET"}),
        "SESAME_SECRET_MY_SECRET": VALUE,
    }
    secrets = Secrets(pod)
    assert secrets.in_pod
    assert secrets.get(key="my.secret") == VALUE
    with pytest.raises(SecretNotFoundError) as caught:
        secrets.get(key="my_secret")
    assert "secret 'my_secret' was not delivered" in str(caught.value)
    assert "when running locally" not in str(caught.value)  # in a pod, the fix is the request
    assert VALUE not in str(caught.value)


def test_in_a_pod_a_default_variable_the_map_does_not_name_is_ignored() -> None:
    pod = {naming.ENV_VARS_ENV: json.dumps({"k": "CUSTOM"}), "SESAME_SECRET_OTHER": VALUE, "CUSTOM": "c"}
    assert Secrets(pod).get(key="k") == "c"
    with pytest.raises(SecretNotFoundError):
        Secrets(pod).get(key="other")
    empty_map = {naming.ENV_VARS_ENV: "{}", "SESAME_SECRET_K": VALUE}  # a pod with FILE secrets only
    with pytest.raises(SecretNotFoundError):
        Secrets(empty_map).get(key="k")


@pytest.mark.parametrize("names_map", ["{not json", "[]", '{"k": 1}'])
def test_a_malformed_names_map_is_an_error_not_a_guess(names_map: str) -> None:
    environ = {naming.ENV_VARS_ENV: names_map, "SESAME_SECRET_K": VALUE}
    with pytest.raises(SecretDeliveryError, match=f"{naming.ENV_VARS_ENV} is not a JSON object"):
        Secrets(environ).get(key="k")


def test_outside_a_pod_the_lookup_is_the_default_variable_then_the_file(tmp_path: Path) -> None:
    environ = {"SESAME_SECRET_MY_SECRET": VALUE, naming.SECRETS_DIR_ENV: str(tmp_path)}
    secrets = Secrets(environ)
    assert not secrets.in_pod
    assert secrets.env_var("my_secret") == "SESAME_SECRET_MY_SECRET"
    assert secrets.env_var("my.secret") == "SESAME_SECRET_MY_SECRET"  # documented: one variable per name
    assert secrets.get(key="my_secret") == VALUE
    (tmp_path / "only_a_file").write_text("from the file")
    assert secrets.get(key="only_a_file") == "from the file"
    with pytest.raises(SecretNotFoundError):
        secrets.get(key="UNION_API_KEY")  # a custom env var is only found through the map


def test_delivered_keys_are_the_names_map_and_the_files(tmp_path: Path) -> None:
    version = tmp_path / "..2026_01_01_00_00_00.1"
    version.mkdir()
    (version / "cert").write_text("c")
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "cert").symlink_to("..data/cert")
    pod = {naming.ENV_VARS_ENV: json.dumps({"b": "B", "a": "A"}), naming.SECRETS_DIR_ENV: str(tmp_path)}
    assert Secrets(pod).delivered_keys() == ["a", "b", "cert"]
    assert Secrets({naming.SECRETS_DIR_ENV: str(tmp_path / "absent")}).delivered_keys() == []


def test_get_honours_a_changed_env_prefix() -> None:
    environ = {naming.ENV_PREFIX_ENV: "APP_", "APP_MY_SECRET": VALUE}
    assert Secrets(environ).get(key="my_secret") == VALUE


def test_get_reads_a_file_under_the_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "my_file_secret").write_bytes(b"line1\r\nline2\n")
    secrets = Secrets({naming.SECRETS_DIR_ENV: str(tmp_path)})
    assert secrets.get(key="my_file_secret") == "line1\r\nline2\n"  # byte-exact, no newline translation
    assert secrets.get_secrets_file("my_file_secret") == str(tmp_path / "my_file_secret")
    assert secrets.get_bytes("my_file_secret") == b"line1\r\nline2\n"


def test_files_are_found_through_kubelet_style_symlinks(tmp_path: Path) -> None:
    version = tmp_path / "..2026_01_01_00_00_00.1"
    version.mkdir()
    (version / "k").write_text(VALUE)
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "k").symlink_to("..data/k")
    assert Secrets({naming.SECRETS_DIR_ENV: str(tmp_path)}).get(key="k") == VALUE


def test_binary_file_needs_get_bytes(tmp_path: Path) -> None:
    blob = bytes(range(256))
    (tmp_path / "keystore").write_bytes(blob)
    secrets = Secrets({naming.SECRETS_DIR_ENV: str(tmp_path)})
    assert secrets.get_bytes("keystore") == blob
    with pytest.raises(SecretDeliveryError, match="get_bytes"):
        secrets.get(key="keystore")


def test_get_bytes_of_an_env_var_undoes_surrogateescape() -> None:
    raw = b"\xff\x00abc"
    environ = {"SESAME_SECRET_K": os.fsdecode(raw)}
    assert Secrets(environ).get_bytes("k") == raw
    with pytest.raises(SecretDeliveryError) as caught:
        Secrets(environ).get(key="k")
    assert os.fsdecode(raw) not in str(caught.value)


def test_an_empty_secrets_dir_variable_does_not_mean_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k").write_text(VALUE)
    with pytest.raises(SecretNotFoundError):
        Secrets({naming.SECRETS_DIR_ENV: ""}).get(key="k")


def test_get_secrets_file_of_an_env_delivered_secret_says_how_to_get_a_file() -> None:
    with pytest.raises(SecretDeliveryError) as caught:
        Secrets({"SESAME_SECRET_MY_SECRET": VALUE}).get_secrets_file("my_secret")
    message = str(caught.value)
    assert "SESAME_SECRET_MY_SECRET" in message
    assert "mountRequirement: FILE" in message
    assert VALUE not in message


def test_missing_secret_names_the_key_and_the_entry_to_add(tmp_path: Path) -> None:
    secrets = Secrets({naming.SECRETS_DIR_ENV: str(tmp_path)})
    with pytest.raises(SecretNotFoundError) as caught:
        secrets.get(key="my_secret")
    message = str(caught.value)
    assert "'my_secret'" in message
    assert "`sesame.Secret(key='my_secret')`" in message
    assert "`- {key: my_secret}`" in message
    assert "spec.secrets" in message
    assert "SESAME_SECRET_MY_SECRET" in message  # how to run it locally
    assert isinstance(caught.value, KeyError)  # code that catches KeyError keeps working

    with pytest.raises(SecretNotFoundError) as file_caught:
        secrets.get_secrets_file("gcp_sa")
    assert "`- {key: gcp_sa, mountRequirement: FILE}`" in str(file_caught.value)
    assert "mount_requirement=sesame.Secret.MountType.FILE" in str(file_caught.value)
    assert str(tmp_path / "gcp_sa") in str(file_caught.value)


def test_missing_secret_message_mentions_no_other_value() -> None:
    environ = {"SESAME_SECRET_OTHER": VALUE, naming.ENV_VARS_ENV: json.dumps({"x": "X"})}
    with pytest.raises(SecretNotFoundError) as caught:
        Secrets(environ).get(key="absent")
    assert VALUE not in str(caught.value)
    assert VALUE not in repr(caught.value)


@pytest.mark.parametrize("key", ["../etc/passwd", "a/b", "", ".."])
def test_keys_cannot_walk_out_of_the_secrets_directory(key: str, tmp_path: Path) -> None:
    inner = tmp_path / "secrets"
    inner.mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root")
    secrets = Secrets({naming.SECRETS_DIR_ENV: str(inner)})
    with pytest.raises(ValueError, match="invalid secret key"):
        secrets.get(key=key)
    with pytest.raises(ValueError, match="invalid secret key"):
        secrets.get_secrets_file(key)


def test_current_context_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESAME_SECRET_FROM_PROCESS", VALUE)
    assert sesame.current_context().secrets.get(key="from_process") == VALUE
    monkeypatch.setenv("SESAME_SECRET_FROM_PROCESS", "rotated")
    assert sesame.current_context().secrets.get(key="from_process") == "rotated"


@given(key=valid_keys, value=st.text(min_size=0, max_size=50))
def test_get_finds_any_valid_key_at_its_default_env_var(key: str, value: str) -> None:
    assert Secrets({default_env(key): value}).get(key=key) == value


@given(key=valid_keys, custom=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True))
def test_get_finds_any_valid_key_at_any_custom_env_var(key: str, custom: str) -> None:
    environ = {naming.ENV_VARS_ENV: json.dumps({key: custom}), custom: VALUE}
    assert Secrets(environ).get(key=key) == VALUE


# -- taskrun_manifest (Secret itself: tests/unit/test_requests.py) -------------------------------


@given(requested=valid_keys, data=st.data())
def test_in_a_pod_only_the_requested_key_is_found_whatever_its_lookalikes(
    requested: str, data: st.DataObject
) -> None:
    lookalikes = [
        requested.upper(),
        requested.lower(),
        requested.replace("_", "."),
        requested.replace("-", "_"),
    ]
    other = data.draw(st.sampled_from(lookalikes) | valid_keys)
    name = default_env(requested)
    pod = Secrets({naming.ENV_VARS_ENV: json.dumps({requested: name}), name: VALUE})
    assert pod.get(key=requested) == VALUE
    if other != requested:
        with pytest.raises(SecretNotFoundError):
            pod.get(key=other)


def test_taskrun_manifest_shape() -> None:
    template = {"spec": {"containers": [{"name": "main", "image": "python:3.12-slim"}]}}
    manifest = taskrun_manifest(
        "train",
        "my-project-development",
        template,
        [Secret(key="my_secret"), Secret(key="cert", mount_requirement=Secret.MountType.FILE)],
    )
    assert manifest == {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "TaskRun",
        "metadata": {"name": "train", "namespace": "my-project-development"},
        "spec": {
            "secrets": [{"key": "my_secret"}, {"key": "cert", "mountRequirement": "FILE"}],
            "template": template,
        },
    }
    assert json.loads(json.dumps(manifest)) == manifest  # plain data, ready for kubectl or a client


def test_taskrun_manifest_refuses_a_key_requested_twice() -> None:
    with pytest.raises(RequestError, match=r"secrets\[1\] requests key 'k' again \(first at secrets\[0\]\)"):
        taskrun_manifest("t", "ns", {"spec": {}}, [Secret(key="k"), Secret(key="k", env_var="OTHER")])


@pytest.mark.parametrize("module", sesame.SDK_MODULES)
def test_every_sdk_module_imports_only_the_stdlib_and_other_sdk_modules(module: str) -> None:
    """What a task image or `sesame run --remote` ships must run on a bare Python 3."""
    tree = ast.parse((Path(sesame.__file__).parent / f"{module}.py").read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    sdk = {f"sesame.{name}" for name in sesame.SDK_MODULES} | {"sesame"}
    outside = {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names and m not in sdk}
    assert outside == set()
