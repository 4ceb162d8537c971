"""`sesame run` without a cluster: task inputs typed like `pyflyte run`, the local mode reading secrets
as a pod would (masked, a returned secret refused), and one line with its own exit code for every
way a run cannot start. The cluster side is tests/integration/test_run_remote.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sesame
from sesame import naming, runner
from sesame.cli import run
from sesame.cli.errors import MEANINGS, CliError, ExitCode

SESAME = str(Path(sys.executable).parent / "sesame")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VALUE = "local-Secret-value-42"


def test_exit_codes_are_distinct_including_aliases() -> None:
    """An IntEnum member with a value already used becomes an alias that iteration skips."""
    values = [member.value for member in ExitCode.__members__.values()]
    assert len(values) == len(set(values)), sorted(values)
    assert set(MEANINGS) == set(ExitCode.__members__.values())
    assert runner.EXIT_RETURNED_SECRET == ExitCode.TASK_RETURNED_SECRET


# -- inputs ---------------------------------------------------------------------------------------


@sesame.task
def typed(
    name: str,
    count: int,
    ratio: float,
    dry_run: bool,
    items: list[int],
    options: dict[str, Any],
    note: str = "x",
) -> None:
    """Typed inputs."""


def test_inputs_are_typed_from_the_annotations() -> None:
    argv = ["--name", "7", "--count", "3", "--ratio", "2", "--dry-run", "--items", "[1, 2]"]
    argv += ["--options", '{"a": [true]}']
    assert run.parse_inputs(typed, argv, "sesame run f.py typed") == {
        "name": "7",
        "count": 3,
        "ratio": 2.0,
        "dry_run": True,
        "items": [1, 2],
        "options": {"a": [True]},
    }
    parsed = run.parse_inputs(typed, [*argv[:6], "--no-dry_run", *argv[7:], "--note", "y"], "p")
    assert (parsed["dry_run"], parsed["note"], type(parsed["ratio"])) == (False, "y", float)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "3"], "the following arguments are required: --name"),
        (["--name", "a", "--count", "three"], "argument --count: invalid int value: 'three'"),
        (["--name", "a", "--count", "1", "--ratio", "x"], "argument --ratio: invalid float value: 'x'"),
        (["--items", "{}"], "argument --items: expected a JSON list, e.g. [1, 2]"),
        (["--options", "[1]"], 'argument --options: expected a JSON dict, e.g. {"a": 1}'),
        (
            ["--nam", "a", "--count", "1", "--ratio", "1", "--dry-run", "--items", "[]", "--options", "{}"],
            "--nam",
        ),
    ],
)
def test_bad_inputs_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(CliError) as caught:
        run.parse_inputs(typed, argv, "sesame run f.py typed")
    assert caught.value.code == ExitCode.USAGE
    assert message in caught.value.message
    assert caught.value.message.endswith("(see `sesame run f.py typed --help`)")


class Thing:
    pass


def test_unsupported_parameters_are_named() -> None:
    def custom(thing: Thing) -> None:
        pass

    def positional(a: int, /) -> None:
        pass

    with pytest.raises(CliError, match=r"input 'thing' is annotated .*Thing.*; sesame run passes str, int"):
        run.task_inputs(sesame.task(custom))
    with pytest.raises(
        CliError, match=r"input 'a' cannot be passed by name: sesame run passes inputs as --name value"
    ):
        run.task_inputs(sesame.task(positional))


def test_optional_and_unannotated_inputs() -> None:
    def loose(a, b: int | None = None) -> None:  # type: ignore[no-untyped-def]
        pass

    inputs = run.task_inputs(sesame.task(loose))
    assert [(i.name, i.kind, i.required, i.default) for i in inputs] == [
        ("a", str, True, None),
        ("b", int, False, None),
    ]


def sesame_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SESAME_")}
    environ["KUBECONFIG"] = "/nonexistent/kubeconfig"  # proves that nothing here needs a cluster
    return subprocess.run(
        [SESAME, *args], env={**environ, **(env or {})}, capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_help_after_task_lists_its_inputs() -> None:
    done = sesame_cli("run", str(EXAMPLES / "using_secrets.py"), "t2", "--help")
    assert done.returncode == 0
    assert "--calls INT  integer (default: 1)" in done.stdout
    assert "Inputs of task t2. A custom env_var" in done.stdout
    general = sesame_cli("run", "--help")
    assert general.returncode == 0
    for part in ["--remote", "--image IMAGE", "--no-wait", "--no-wait-for-secrets", "FILE", "TASK"]:
        assert part in general.stdout
    assert " 20  run: a requested secret is missing" in general.stdout


# -- the local mode ---------------------------------------------------------------------------------


def test_the_examples_run_locally_with_secrets_from_the_environment(tmp_path: Path) -> None:
    env_run = sesame_cli(
        "run", str(EXAMPLES / "using_secrets.py"), "t1", env={"SESAME_SECRET_MY_SECRET": VALUE}
    )
    assert env_run.returncode == 0, env_run.stderr
    assert (
        env_run.stdout == f"t1 read my_secret ({len(VALUE)} characters); printed by mistake it reads ****\n"
    )
    custom = sesame_cli(
        "run", str(EXAMPLES / "using_secrets.py"), "t2", "--calls", "3", env={"UNION_API_KEY": VALUE}
    )
    assert custom.returncode == 0, custom.stderr
    assert custom.stdout.splitlines() == [
        "t2 would call the API 3 time(s) with UNION_API_KEY set",
        "sesame: task 't2' returned 3",
    ]
    (tmp_path / "my_file_secret").write_text(VALUE + "\n")
    (tmp_path / "gcp_sa").write_text('{"type": "service_account"}')
    files = sesame_cli(
        "run", str(EXAMPLES / "using_secrets_file.py"), "t1", env={naming.SECRETS_DIR_ENV: str(tmp_path)}
    )
    assert files.returncode == 0, files.stderr
    assert files.stdout.splitlines() == [
        f"t1 read {tmp_path}/my_file_secret ({len(VALUE) + 1} characters)",
        f"t1 found a service_account credential at {tmp_path}/gcp_sa",
        "sesame: task 't1' returned 'service_account'",
    ]
    for done in (env_run, custom, files):
        assert VALUE not in done.stdout + done.stderr


def test_a_missing_secret_is_one_line_saying_how_to_provide_it_locally(tmp_path: Path) -> None:
    done = sesame_cli("run", str(EXAMPLES / "using_secrets.py"), "t2")
    assert done.returncode == ExitCode.SECRET_MISSING
    assert done.stdout == ""
    assert done.stderr == (
        "error: secret 'my_union_api_key': export UNION_API_KEY=<its value> — when run locally a task reads "
        "its secrets from this environment; `sesame run --remote` uses the stored ones\n"
    )
    files = sesame_cli(
        "run", str(EXAMPLES / "using_secrets_file.py"), "t1", env={naming.SECRETS_DIR_ENV: str(tmp_path)}
    )
    assert files.returncode == ExitCode.SECRET_MISSING
    assert files.stderr.startswith(
        f"error: FILE secret 'my_file_secret': put it in {tmp_path}/my_file_secret (or point "
        f"SESAME_SECRETS_DIR at a directory that has it) (and 1 more: FILE secret 'gcp_sa')"
    )


LEAKY = """
import base64, os, subprocess, sys
import sesame

@sesame.task(secret_requests=[sesame.Secret(key="api_token")])
def shout(code: int = 0) -> None:
    value = sesame.current_context().secrets.get(key="api_token")
    print("print", value)
    print("b64", base64.b64encode(value.encode()).decode(), file=sys.stderr)
    subprocess.run([sys.executable, "-c", "import os; print('child', os.environ['SESAME_SECRET_API_TOKEN'])"])
    raise SystemExit(code)

@sesame.task(secret_requests=[sesame.Secret(key="api_token")])
def give_away() -> dict:
    return {"token": sesame.current_context().secrets.get(key="api_token")}

@sesame.task(secret_requests=[sesame.Secret(key="api_token")])
def peek() -> None:
    sesame.current_context().secrets.get(key="other_token")
"""


def test_locally_output_is_masked_a_returned_secret_refused_and_exit_codes_kept(tmp_path: Path) -> None:
    flow = tmp_path / "leaky.py"
    flow.write_text(LEAKY)
    env = {"SESAME_SECRET_API_TOKEN": VALUE, "SESAME_SECRET_OTHER_TOKEN": "not-requested-value"}
    shout = sesame_cli("run", str(flow), "shout", "--code", "4", env=env)
    assert shout.returncode == 4
    assert shout.stdout == "print ****\nchild ****\n"
    assert shout.stderr == "b64 ****\n"
    give_away = sesame_cli("run", str(flow), "give_away", env=env)
    assert give_away.returncode == ExitCode.TASK_RETURNED_SECRET == 65
    assert give_away.stdout == ""
    assert "returned a value that contains the secret 'api_token'" in give_away.stderr
    assert VALUE not in give_away.stderr
    peek = sesame_cli("run", str(flow), "peek", env=env)  # as in a pod: only what the task requested
    assert peek.returncode == 1
    assert "SecretNotFoundError: secret 'other_token' was not delivered to this task" in peek.stderr
    assert "not-requested-value" not in peek.stdout + peek.stderr


TASK_FILE = "import sesame\n@sesame.task\ndef t1(): pass\n"


@pytest.mark.parametrize(
    ("source", "args", "code", "message"),
    [
        (TASK_FILE, ["t2"], ExitCode.NOT_A_TASK, "has no task named 't2'"),
        ("def t1(): pass\n", ["t1"], ExitCode.NOT_A_TASK, "'t1' in {file} is not decorated with"),
        ("raise RuntimeError('boom')\n", ["t1"], ExitCode.TASK_LOAD_FAILED, "RuntimeError: boom (line 1)"),
        (None, ["t1"], ExitCode.FILE_UNREADABLE, "cannot read {file}: no such file"),
        (TASK_FILE, ["t1", "--image", "x"], ExitCode.USAGE, "--image needs --remote"),
    ],
)  # fmt: skip
def test_a_run_that_cannot_start_is_one_line_with_its_own_code(
    tmp_path: Path, source: str | None, args: list[str], code: ExitCode, message: str
) -> None:
    file = tmp_path / "flow.py"
    if source is not None:
        file.write_text(source)
    done = sesame_cli("run", *(["--image", "x"] if "--image" in args else []), str(file), *args[:1])
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("error: ")
    assert message.format(file=file) in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_a_file_too_large_for_a_configmap_is_refused_before_connecting(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_text("import sesame\n@sesame.task\ndef t1(): pass\nDATA = '" + "x" * (1024 * 1024) + "'\n")
    done = sesame_cli("run", "--remote", "--project", "p", "--domain", "d", str(big), "t1")
    assert done.returncode == ExitCode.CODE_TOO_LARGE
    assert done.stderr.startswith(f"error: {big} is 1.0 MiB; with the Sesame SDK (")
    assert done.stderr.endswith(
        "that is over the 1 MiB a ConfigMap holds: keep the task's file small and put large code or data in "
        "the image\n"
    )


def test_remote_objects_carry_the_requests_the_code_and_an_unstartable_pod_without_it(tmp_path: Path) -> None:
    """The TaskRun and ConfigMap `--remote` creates (what the API server and kubelet then decide is
    tested against the real cluster)."""
    task = sesame.task(
        secret_requests=[
            sesame.Secret(key="my_secret"),
            sesame.Secret(key="gcp_sa", mount_requirement="FILE"),
        ]  # type: ignore[arg-type]
    )(lambda n: n)
    flow = tmp_path / "using_secrets.py"
    flow.write_text("print('the task file')\n")
    taskrun, configmap = run.build_objects(task, {"n": 2}, flow, "t1-abc123", "p-d", "img:1")
    assert taskrun["spec"]["secrets"] == [{"key": "my_secret"}, {"key": "gcp_sa", "mountRequirement": "FILE"}]
    pod = taskrun["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["python3", "-m", "sesame.runner"]
    assert pod["containers"][0]["args"] == ["/opt/sesame/using_secrets.py", "<lambda>", '{"n": 2}']
    assert pod["volumes"] == [
        {
            "name": "sesame-code",
            "configMap": {
                "name": "t1-abc123",
                "optional": False,  # the kubelet waits for the code rather than start without it
                "items": [{"key": f"sesame.{m}.py", "path": f"sesame/{m}.py"} for m in sesame.SDK_MODULES]
                + [{"key": "task.py", "path": "using_secrets.py"}],
            },
        }
    ]
    assert configmap["data"]["task.py"] == "print('the task file')\n"
    assert configmap["data"]["sesame.runner.py"] == (ROOT / "operator" / "sesame" / "runner.py").read_text()
    assert set(configmap["data"]) == {f"sesame.{m}.py" for m in sesame.SDK_MODULES} | {"task.py"}
