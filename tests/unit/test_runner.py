"""The pod's runner: secret values never reach the task's output (however it is cut into writes, on
one line or many, raw or base64), a returned secret fails the task, and exit codes are the task's."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sesame
from sesame import naming, runner
from sesame.cli.errors import ExitCode
from sesame.runner import MASK, Masker, masked_output, returned_secret, run_task, secret_forms

SECRET = b"s3cr3t-Value/with+chars"
ROOT = Path(__file__).resolve().parents[2]


def stream(masker: Masker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(chunk) for chunk in chunks) + masker.flush()


def test_the_value_and_its_base64_are_masked() -> None:
    text = (
        b"token=" + SECRET + b" b64=" + base64.b64encode(SECRET) + b" url=" + base64.urlsafe_b64encode(SECRET)
    )
    assert Masker([SECRET]).mask(text) == b"token=**** b64=**** url=****"


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:"])
def test_base64_inside_a_longer_base64_text_is_masked_at_every_alignment(prefix: bytes) -> None:
    """`user:password` encoded together still shows no run of the password's own base64."""
    encoded = base64.b64encode(prefix + SECRET + b"@host")
    masked = Masker([SECRET]).mask(encoded)
    assert MASK in masked
    for offset in (0, 1, 2):  # the characters that depend on the secret alone are gone
        own = base64.b64encode(b"\0" * offset + SECRET)[4 if offset else 0 : (offset + len(SECRET)) // 3 * 4]
        assert own not in masked


def test_a_multi_line_value_is_masked_whole_line_by_line_and_escaped() -> None:
    pem = b"-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----\n"
    masker = Masker([pem])
    assert masker.mask(b"key:\n" + pem) == b"key:\n****"
    assert masker.mask(b"line: MIIEvQIBADANBgkq.") == b"line: ****."
    assert masker.mask(b"repr: " + repr(pem.decode()).encode()) == b"repr: '****'"
    assert masker.mask(json.dumps({"k": pem.decode()}).encode()) == b'{"k": "****"}'
    crlf = b"first-line\r\nsecond-line"
    assert Masker([crlf]).mask(b"got second-line and first-line") == b"got **** and ****"


def test_values_too_short_to_mask_are_reported_not_masked() -> None:
    assert secret_forms(b"abc") == set()
    assert Masker([b"abc"]).mask(b"abc abc") == b"abc abc"
    assert runner.short_secrets({"pin": b"123", "token": SECRET}) == ["pin"]


def test_a_value_split_across_writes_is_masked() -> None:
    masker = Masker([SECRET])
    out = [
        masker.feed(b"start " + SECRET[:5]),
        masker.feed(SECRET[5:12]),
        masker.feed(SECRET[12:] + b" end\n"),
    ]
    assert out[0] == b"start "  # the possible beginning of a secret waits
    assert b"".join(out) + masker.flush() == b"start **** end\n"


def test_output_that_cannot_start_a_secret_is_not_delayed() -> None:
    masker = Masker([SECRET])
    assert masker.feed(b"progress 10%\n") == b"progress 10%\n"
    assert masker.feed(b"almost s") == b"almost "  # 's' may begin the secret
    assert masker.feed(b"ure\n") == b"sure\n"


TEXT = st.binary(max_size=40)
VALUES = st.binary(min_size=4, max_size=30).filter(lambda v: b"*" not in v)  # "****" is the mask itself


@given(
    values=st.lists(VALUES, min_size=1, max_size=3),
    parts=st.lists(st.tuples(TEXT, st.integers(0, 2)), max_size=6),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_streaming_masks_exactly_like_masking_the_whole_text(
    values: list[bytes], parts: list[tuple[bytes, int]], cuts: list[int]
) -> None:
    """However the output is cut into writes, the result is the whole text masked, and no value is
    left in it."""
    whole = b"".join(text + values[index % len(values)] for text, index in parts)
    points = sorted({min(cut, len(whole)) for cut in cuts})
    chunks = [whole[start:end] for start, end in zip([0, *points], [*points, len(whole)], strict=True)]
    expected = Masker(values).mask(whole)
    assert stream(Masker(values), chunks) == expected
    for value in values:
        # a value may survive only where masking a longer form already consumed part of it
        if value in expected:
            assert any(value in form and value != form for other in values for form in secret_forms(other))


@given(value=st.text(min_size=4, max_size=30).filter(lambda v: "*" not in v), text=st.text(max_size=30))
def test_a_printed_value_never_survives(value: str, text: str) -> None:
    masker = Masker([value.encode()])
    printed = f"{text}{value}{text}\n".encode()
    out = stream(masker, [printed[i : i + 3] for i in range(0, len(printed), 3)])
    assert value.encode() not in out
    assert base64.b64encode(value.encode()) not in out


# -- return values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        SECRET.decode(),
        SECRET,
        {"token": SECRET.decode()},
        [1, ("x", {"nested": f"Bearer {SECRET.decode()}"})],
        {SECRET.decode(): 1},
        base64.b64encode(SECRET).decode(),
        type("Box", (), {"__repr__": lambda self: f"Box({SECRET.decode()})"})(),
    ],
)
def test_a_returned_secret_is_found_wherever_it_hides(result: Any) -> None:
    assert returned_secret(result, {"other": b"unrelated-value", "api_token": SECRET}) == "api_token"


@pytest.mark.parametrize("result", [None, 42, "fine", {"length": len(SECRET)}, [b"bytes"]])
def test_a_result_without_secrets_passes(result: Any) -> None:
    assert returned_secret(result, {"api_token": SECRET}) is None


def task_of(function: Any) -> sesame.Task[..., Any]:
    return sesame.task(secret_requests=[sesame.Secret(key="api_token")])(function)


def test_run_task_refuses_a_returned_secret_without_printing_it(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_task(task_of(lambda: {"token": SECRET.decode()}), {}, {"api_token": SECRET})
    out, err = capsys.readouterr()
    assert code == runner.EXIT_RETURNED_SECRET == ExitCode.TASK_RETURNED_SECRET == 65
    assert SECRET.decode() not in out + err
    assert "returned a value that contains the secret 'api_token'" in err


def test_run_task_exit_codes_and_printed_result(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_task(task_of(lambda n: n * 2), {"n": 21}, {"api_token": SECRET}) == 0
    assert capsys.readouterr().out == "sesame: task '<lambda>' returned 42\n"

    def exits() -> None:
        raise SystemExit(7)

    def says() -> None:
        raise SystemExit("bad input")

    def fails() -> None:
        raise ValueError("broken")

    assert run_task(task_of(exits), {}, {}) == 7
    assert run_task(task_of(says), {}, {}) == 1
    assert capsys.readouterr().err == "bad input\n"
    assert run_task(task_of(fails), {}, {}) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "in fails" in err
    assert "run_task" not in err  # the traceback starts in the task's own code
    assert err.endswith("ValueError: broken\n")


def test_masked_output_covers_the_file_descriptors_and_child_processes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """What the local `sesame run` wraps the task in (print() itself: tests/unit/test_cli_run.py)."""
    with masked_output([SECRET]):
        os.write(1, b"print " + SECRET + b"\n")
        os.write(2, b"fd2 " + SECRET[:4])
        os.write(2, SECRET[4:] + b"\n")
        subprocess.run([sys.executable, "-c", f"print('child {SECRET.decode()}')"], check=True)
    out, err = capfd.readouterr()
    assert out == "print ****\nchild ****\n"
    assert err == "fd2 ****\n"


# -- the runner as the pod runs it ------------------------------------------------------------------


def test_the_runner_process_masks_its_child_and_exits_with_its_code(tmp_path: Path) -> None:
    """`python3 -m sesame.runner FILE TASK INPUTS` in an environment shaped like a pod's."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "cert").write_bytes(b"-----BEGIN-----\ncert-body-line\n-----END-----\n")
    task_file = tmp_path / "flow.py"
    task_file.write_text(
        "import os, sys, sesame\n"
        "@sesame.task(secret_requests=[sesame.Secret(key='api_token'),"
        " sesame.Secret(key='cert', mount_requirement='FILE')])\n"
        "def t1(code: int) -> None:\n"
        "    s = sesame.current_context().secrets\n"
        "    print('token', s.get(key='api_token'), flush=True)\n"
        "    sys.stderr.write('cert ' + s.get(key='cert'))\n"
        "    raise SystemExit(code)\n"
    )
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "operator"),
        naming.ENV_VARS_ENV: json.dumps({"api_token": "SESAME_SECRET_API_TOKEN"}),
        "SESAME_SECRET_API_TOKEN": SECRET.decode(),
        naming.SECRETS_DIR_ENV: str(secrets_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "sesame.runner", str(task_file), "t1", '{"code": 3}'],
        env=environ,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == b"token ****\n"
    assert done.stderr == b"cert ****"  # the whole value, not line by line
    usage = subprocess.run(
        [sys.executable, "-m", "sesame.runner", str(task_file), "t9"],
        env=environ,
        capture_output=True,
        check=False,
    )
    assert usage.returncode == runner.EXIT_USAGE
    assert b"has no task named 't9'" in usage.stderr
