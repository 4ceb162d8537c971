"""`@sesame.task`: the function stays callable as before, its requests are recorded and checked when
the module is imported, and `load_task` finds a task in a file or says why it cannot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sesame
from sesame.requests import RequestError
from sesame.tasks import NotATaskError, Task, TaskLoadError, load_task


def test_the_decorator_records_requests_and_keeps_the_function() -> None:
    @sesame.task(
        secret_requests=[
            sesame.Secret(key="my_secret"),
            sesame.Secret(key="gcp_sa", mount_requirement=sesame.Secret.MountType.FILE),
        ],
        container_image="python:3.12-slim",
    )
    def t1(a: int, b: int = 2) -> int:
        """Adds."""
        return a + b

    assert isinstance(t1, Task)
    assert t1(1) == 3
    assert t1(a=1, b=5) == 6
    assert (t1.__name__, t1.__doc__, t1.name) == ("t1", "Adds.", "t1")
    assert [request.to_request() for request in t1.secret_requests] == [
        {"key": "my_secret"},
        {"key": "gcp_sa", "mountRequirement": "FILE"},
    ]
    assert t1.container_image == "python:3.12-slim"
    assert repr(t1) == "<sesame.task t1 secrets=[my_secret, gcp_sa]>"


def test_the_bare_decorator_means_no_secrets() -> None:
    @sesame.task
    def plain() -> str:
        return "ok"

    assert plain() == "ok"
    assert plain.secret_requests == ()
    assert plain.container_image is None


@given(args=st.lists(st.integers() | st.text(max_size=5), max_size=4))
def test_a_task_returns_what_its_function_returns(args: list[Any]) -> None:
    def collect(*items: Any) -> tuple[Any, ...]:
        return items

    assert sesame.task(secret_requests=[sesame.Secret(key="k")])(collect)(*args) == collect(*args)


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ("my_secret", "@sesame.task t: secret_requests must be a list, e.g. [sesame.Secret(key=...)]"),
        (
            ["my_secret"],
            "@sesame.task t: secret_requests holds 'my_secret' (str); write sesame.Secret(key=...)",
        ),
        (
            [sesame.Secret(key="a"), sesame.Secret(key="a", env_var="OTHER")],
            "@sesame.task t secret_requests[1] requests key 'a' again (first at @sesame.task t",
        ),
        (
            [sesame.Secret(key="my.secret"), sesame.Secret(key="my_secret")],
            "@sesame.task t: secrets 'my.secret' and 'my_secret' both set env var 'SESAME_SECRET_MY_SECRET'",
        ),
        (
            [sesame.Secret(key="a", env_var="X"), sesame.Secret(key="b", env_var="X")],
            "secrets 'a' and 'b' both set env var 'X'; give one of them a different env_var",
        ),
    ],
)
def test_requests_that_cannot_be_delivered_together_fail_at_import(requests: Any, message: str) -> None:
    def t() -> None:
        pass

    with pytest.raises(RequestError) as caught:
        sesame.task(secret_requests=requests)(t)
    assert message in str(caught.value)


def test_two_file_secrets_without_env_vars_do_not_clash() -> None:
    file = sesame.Secret.MountType.FILE
    task = sesame.task(
        secret_requests=[
            sesame.Secret(key="a", mount_requirement=file),
            sesame.Secret(key="b", mount_requirement=file),
        ]
    )(lambda: None)
    assert [request.key for request in task.secret_requests] == ["a", "b"]


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def test_load_task_finds_the_task(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "flow.py",
        "import sesame\n@sesame.task(secret_requests=[sesame.Secret(key='k')])\ndef t1(x: int) -> int:\n"
        "    return x * 2\n",
    )
    task = load_task(path, "t1")
    assert task(x=21) == 42
    assert task.secret_requests == (sesame.Secret(key="k"),)


@pytest.mark.parametrize(
    ("source", "name", "error", "message"),
    [
        (
            "import sesame\n@sesame.task\ndef t1(): pass\n",
            "t9",
            NotATaskError,
            "has no task named 't9' (its tasks: t1)",
        ),
        (
            "def helper(): pass\n",
            "helper",
            NotATaskError,
            "'helper' in {path} is not decorated with @sesame.task",
        ),
        ("x = 1\n", "x", NotATaskError, "(it has no @sesame.task)"),
        ("def t1(:\n", "t1", TaskLoadError, "cannot load {path}: SyntaxError: invalid syntax (line 1)"),
        ("import no_such_module_here\n", "t1", TaskLoadError, "ModuleNotFoundError: No module named"),
        ("\n\nraise SystemExit(3)\n", "t1", TaskLoadError, "cannot load {path}: SystemExit: 3 (line 3)"),
    ],
)
def test_load_task_says_what_is_wrong_in_one_line(
    tmp_path: Path, source: str, name: str, error: type[Exception], message: str
) -> None:
    path = write(tmp_path, "flow.py", source)
    with pytest.raises(error) as caught:
        load_task(path, name)
    assert message.format(path=path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_task_file_named_like_a_loaded_module_does_not_replace_it(tmp_path: Path) -> None:
    path = write(tmp_path, "json.py", "import sesame\n@sesame.task\ndef t1() -> str:\n    return 'mine'\n")
    assert load_task(path, "t1")() == "mine"
    import json

    assert json.dumps([1]) == "[1]"


def test_an_unreadable_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(TaskLoadError, match=r"cannot read .*absent\.py: no such file or directory"):
        load_task(tmp_path / "absent.py", "t1")
