"""The `sesame` CLI against a real API server, run as users run it: a subprocess (and a real
pseudo-terminal for the prompt). Every command run here is checked for the test's canary value
in its stdout and stderr."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import free_port
from sesame import naming
from sesame.cli.errors import ExitCode
from tests.support import leaks
from tests.support.cluster import Cluster

BIN = Path(sys.executable).parent
SESAME = str(BIN / "sesame")
MANAGED = {naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE}
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=sesame"


class Cli(Protocol):
    def __call__(
        self,
        *args: str,
        stdin: bytes = b"",
        env: dict[str, str] | None = None,
        timeout: float = 60,
        runner: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[bytes]: ...


@pytest.fixture
def outputs() -> list[bytes]:
    """Everything every command of the test printed, to look for the canary at the end."""
    return []


@pytest.fixture
def cli(cluster: Cluster, canary: str, outputs: list[bytes]) -> Iterator[Cli]:
    def run(
        *args: str,
        stdin: bytes = b"",
        env: dict[str, str] | None = None,
        timeout: float = 60,
        runner: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [*runner, SESAME, *args],
            env=env or cluster.env(),
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )
        outputs.append(result.stdout + result.stderr)
        assert b"Traceback" not in result.stderr, result.stderr.decode()
        return result

    yield run
    for output in outputs:
        assert canary.encode() not in output


# Root reads any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), and CI runs as root: such a run
# drops both capabilities for the CLI, so a mode-000 file is unreadable to it as to any user.
AS_A_USER = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()


def where(namespace: str) -> list[str]:
    """--project/--domain that the default template turns into `namespace` (t-<hex>)."""
    project, domain = namespace.split("-", 1)
    return ["--project", project, "--domain", domain]


def stored(cluster: Cluster, namespace: str, name: str) -> Any:
    return cluster.core.read_namespaced_secret(name, namespace)


def value_of(cluster: Cluster, namespace: str, key: str) -> bytes:
    secret = stored(cluster, namespace, naming.secret_object_name(key))
    return base64.b64decode(secret.data[key])


def one_error_line(result: subprocess.CompletedProcess[bytes], code: ExitCode, *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, f"exit {result.returncode}, wanted {code!r}: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# -- a pseudo-terminal -----------------------------------------------------------------------------


def run_in_terminal(
    argv: list[str],
    env: dict[str, str],
    prompt: bytes,
    typed: bytes | None,
    timeout: float = 60,
    enter: bytes = b"\r",
) -> tuple[int, bytes]:
    """Run argv with a new pseudo-terminal as its controlling terminal (stdin/stdout/stderr and
    /dev/tty), type `typed` + `enter` at once (as a paste arrives) when `prompt` shows; return
    (exit code, all terminal output)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: exec at once
        try:
            os.execve(argv[0], argv, env)  # noqa: S606 - a fixed argv, no shell wanted
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + timeout
    sent = typed is None
    try:
        while time.monotonic() < deadline:
            if not sent and prompt in output:
                os.write(fd, typed + enter)  # type: ignore[operator]  # Enter sends CR, as a real terminal does
                sent = True
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        else:
            os.kill(pid, 9)
            raise AssertionError(f"{argv} did not finish in {timeout}s; terminal showed {output!r}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        leaks.record(f"terminal of `{' '.join(argv)[-80:]}`", output)
    return os.waitstatus_to_exitcode(status), output


def test_a_terminal_echoes_typing_unless_told_not_to(tmp_path: Path) -> None:
    """Control for the prompt test: the same terminal shows what is typed to a plain `read`."""
    shell = shutil.which("sh")
    assert shell
    code, output = run_in_terminal(
        [shell, "-c", "printf 'name: '; read x"], dict(os.environ), b"name: ", b"visible-typing"
    )
    assert code == 0
    assert b"visible-typing" in output


def test_prompt_without_echo_on_a_real_terminal(cluster: Cluster, namespace: str, canary: str) -> None:
    env = cluster.env()
    typed = f"{canary}-typed"
    code, output = run_in_terminal(
        [SESAME, "create", "secret", *where(namespace), "my_secret"],
        env,
        b"Enter secret value: ",
        typed.encode(),
    )
    assert code == 0, output
    assert b"Enter secret value: " in output
    assert canary.encode() not in output  # not echoed, not printed
    assert b"created" in output
    assert value_of(cluster, namespace, "my_secret") == typed.encode()

    new = f"{canary}-new"
    code, output = run_in_terminal(
        [SESAME, "update", "secret", *where(namespace), "my_secret"],
        env,
        b"Enter new secret value: ",
        new.encode(),
    )
    assert code == 0, output
    assert b"Enter new secret value: " in output
    assert canary.encode() not in output
    assert value_of(cluster, namespace, "my_secret") == new.encode()

    # Enter on an empty prompt: refused, nothing stored
    code, output = run_in_terminal(
        [SESAME, "create", "secret", *where(namespace), "other"], env, b"Enter secret value: ", b""
    )
    assert code == ExitCode.EMPTY_VALUE
    assert b"error: the value typed is empty" in output


def terminal_error(output: bytes, code: int, wanted: ExitCode, *fragments: str) -> str:
    """The terminal showed exactly one line, an `error: …` holding `fragments`; the exit code fits."""
    assert code == wanted, f"exit {code}, wanted {wanted!r}: {output!r}"
    lines = output.decode().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def test_every_check_comes_before_the_prompt(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """Nothing is asked for only to be thrown away: a missing namespace, an unreachable cluster and
    a key that clashes with a stored one are said before the prompt shows."""
    env = cluster.env()
    stored_first = subprocess.run(
        [SESAME, "create", "secret", "-n", namespace, "my_secret"],
        env=env,
        input=b"v",
        capture_output=True,
        timeout=60,
    )
    assert stored_first.returncode == 0, stored_first.stderr
    refused = kubeconfig_with(cluster, tmp_path / "refused", server=f"https://127.0.0.1:{free_port()}")
    cases = [
        (["-n", "no-such-namespace", "k"], ExitCode.NAMESPACE_NOT_FOUND, "namespace 'no-such-namespace'"),
        (["-n", namespace, "k", "--kubeconfig", str(refused)], ExitCode.UNREACHABLE, "cannot reach"),
        (["-n", namespace, "my.secret"], ExitCode.KEY_CLASH, "clashes with existing secret 'my_secret'"),
    ]
    for args, wanted, fragment in cases:
        code, output = run_in_terminal(
            [SESAME, "create", "secret", *args], env, b"Enter secret value: ", b"typed-for-nothing"
        )
        assert b"Enter secret value" not in output
        terminal_error(output, code, wanted, fragment)


def test_the_prompt_takes_one_whole_line_or_nothing(cluster: Cluster, namespace: str, canary: str) -> None:
    """What is stored is what the user typed, whole: a multi-line paste, a line the terminal may have
    cut and a blank value are refused, and Ctrl-D stores nothing. Messages get lines of their own."""
    env = cluster.env()

    def create(key: str, typed: bytes, enter: bytes = b"\r") -> tuple[int, bytes]:
        argv = [SESAME, "create", "secret", "--namespace", namespace, key]
        return run_in_terminal(argv, env, b"Enter secret value: ", typed, enter=enter)

    def after_the_prompt(output: bytes) -> bytes:
        prompt, _, rest = output.partition(b"\r\n")
        assert prompt == b"Enter secret value: ", output  # what follows starts on a line of its own
        return rest

    pasted = f"{canary}-line-1\r{canary}-line-2".encode()
    for enter in (b"\r", b""):  # the paste ends with a newline, or not
        code, output = create("pasted", pasted, enter)
        assert canary.encode() not in output
        terminal_error(
            after_the_prompt(output),
            code,
            ExitCode.VALUE_REFUSED,
            "the value pasted at the prompt has more than one line and was not stored",
            "-f FILE",
        )
    code, output = create("long", b"x" * 5000)  # Linux keeps 4095 characters of a line
    terminal_error(
        after_the_prompt(output), code, ExitCode.VALUE_REFUSED, "4095 characters", "may have been cut"
    )
    code, output = create("blank", b"  \t ")
    terminal_error(after_the_prompt(output), code, ExitCode.EMPTY_VALUE, "only whitespace")
    code, output = create("nothing", b"\x04", enter=b"")  # Ctrl-D
    terminal_error(after_the_prompt(output), code, ExitCode.EMPTY_VALUE, "nothing was stored")
    assert cluster.core.list_namespaced_secret(namespace, label_selector=MANAGED_SELECTOR).items == []


def test_a_terminal_that_cannot_hide_typing_is_refused(cluster: Cluster, namespace: str, canary: str) -> None:
    """Without terminal control (here: no termios), getpass warns and reads WITH echo, showing the
    secret; the CLI refuses to prompt instead and says what to do."""
    without_termios = (
        "import sys; sys.modules['termios'] = None; from sesame.entrypoint import main; sys.exit(main())"
    )
    argv = [sys.executable, "-c", without_termios, "create", "secret", "--namespace", namespace, "k"]
    code, output = run_in_terminal(argv, cluster.env(), b"Enter secret value: ", canary.encode())
    assert canary.encode() not in output
    terminal_error(output, code, ExitCode.VALUE_REFUSED, "cannot hide what is typed", "-f FILE", "stdin")


def test_stdin_is_stored_as_read_and_a_trailing_newline_is_named(
    cli: Cli, cluster: Cluster, namespace: str, canary: str
) -> None:
    echoed = cli("create", "secret", "-n", namespace, "echoed", stdin=f"{canary}\n".encode())
    assert echoed.returncode == 0, echoed.stderr
    assert value_of(cluster, namespace, "echoed") == f"{canary}\n".encode()  # never stripped silently
    assert echoed.stderr.decode().splitlines() == [
        "warning: stdin ends with a newline, which is stored as part of the value "
        "(echo adds one: use printf '%s' or -f FILE to leave it out)"
    ]
    for key, value in (("printed", canary.encode()), ("pem", b"-----BEGIN X-----\nabc\n-----END X-----\n")):
        quiet = cli("create", "secret", "-n", namespace, key, stdin=value)
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stderr == b""  # no newline to warn about; a multi-line value ends in one by nature
        assert value_of(cluster, namespace, key) == value
    one_error_line(
        cli("create", "secret", "-n", namespace, "blank", stdin=b" \n\t\n"),
        ExitCode.EMPTY_VALUE,
        "stdin is only whitespace",
    )


def test_help_says_how_values_are_read(cli: Cli) -> None:
    for verb in ("create", "update"):
        text = " ".join(cli(verb, "secret", "--help").stdout.decode().split())
        for rule in (
            "keeps the newline, with a warning on stderr",
            "a paste of more than one line",
            "a line of 4095 characters or more",
            "a terminal that cannot hide typing",
            "Ctrl-D stores nothing",
            "only whitespace, is refused (exit 10)",
            "The namespace is checked before the value is asked for",
        ):
            assert rule in text, (verb, rule)


# -- the whole cycle -----------------------------------------------------------------------------


def test_create_get_update_delete(cli: Cli, cluster: Cluster, namespace: str, canary: str) -> None:
    first, second = f"{canary}-1".encode(), f"{canary}-2\n".encode()
    created = cli("create", "secret", *where(namespace), "my_secret", stdin=first)
    assert created.returncode == 0, created.stderr
    assert created.stdout.decode().strip() == f"secret 'my_secret' created in namespace '{namespace}'"

    secret = stored(cluster, namespace, "my-secret")
    assert secret.type == "Opaque"
    assert secret.metadata.labels == MANAGED
    annotations = secret.metadata.annotations
    assert annotations[naming.KEY_ANNOTATION] == "my_secret"
    assert annotations["sesame.dev/source"] == "value"
    assert annotations["sesame.dev/updated-at"].endswith("Z")
    assert set(secret.data) == {"my_secret"}
    assert value_of(cluster, namespace, "my_secret") == first

    table = cli("get", "secret", *where(namespace))
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.decode().splitlines()
    assert header.split() == ["NAME", "SOURCE", "CREATED", "UPDATED"]
    assert row.split()[:2] == ["my_secret", "value"]

    one = cli("get", "secret", *where(namespace), "my_secret", "-o", "json")
    assert one.returncode == 0, one.stderr
    info = json.loads(one.stdout)
    assert info["name"] == "my_secret"
    assert info["namespace"] == namespace
    assert info["secretName"] == "my-secret"
    assert info["source"] == "value"
    assert info["created"] == secret.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert info["updated"] == annotations["sesame.dev/updated-at"]

    time.sleep(1.1)  # updated-at has one-second resolution
    updated = cli("update", "secret", *where(namespace), "my_secret", stdin=second)
    assert updated.returncode == 0, updated.stderr
    assert "updated" in updated.stdout.decode()
    assert value_of(cluster, namespace, "my_secret") == second  # stdin is stored exactly, newline too
    after = stored(cluster, namespace, "my-secret")
    assert after.metadata.uid == secret.metadata.uid
    assert after.metadata.annotations["sesame.dev/updated-at"] > annotations["sesame.dev/updated-at"]

    listed = cli("get", "secrets", *where(namespace), "-o", "yaml")
    assert listed.returncode == 0, listed.stderr
    (item,) = yaml.safe_load(listed.stdout)
    assert item["name"] == "my_secret"
    assert item["updated"] > item["created"]

    deleted = cli("delete", "secret", *where(namespace), "my_secret")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted" in deleted.stdout.decode()
    with pytest.raises(ApiException) as gone:
        stored(cluster, namespace, "my-secret")
    assert gone.value.status == 404

    empty = cli("get", "secret", *where(namespace))
    assert empty.returncode == 0
    assert empty.stdout == b""
    assert "No secrets found" in empty.stderr.decode()
    assert json.loads(cli("get", "secret", *where(namespace), "-o", "json").stdout) == []


def test_binary_file_round_trips_byte_exact(
    cli: Cli, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    blob = b"\x00\xff\xfe\x80invalid utf-8\xc3\x28\x00" + os.urandom(4096) + b"\r\n\x00"
    path = tmp_path / "keystore.p12"
    path.write_bytes(blob)
    created = cli("create", "secret", "--namespace", namespace, "keystore", "-f", str(path))
    assert created.returncode == 0, created.stderr
    assert value_of(cluster, namespace, "keystore") == blob
    assert stored(cluster, namespace, "keystore").metadata.annotations["sesame.dev/source"] == "file"

    other = os.urandom(2048) + b"\x00"
    path.write_bytes(other)
    updated = cli("update", "secret", "--namespace", namespace, "keystore", "--file", str(path))
    assert updated.returncode == 0, updated.stderr
    assert value_of(cluster, namespace, "keystore") == other

    listed = cli("get", "secret", "--namespace", namespace)
    assert listed.stdout.decode().splitlines()[1].split()[:2] == ["keystore", "file"]


def test_one_mib_fits_and_one_byte_more_does_not(
    cli: Cli, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    exactly = tmp_path / "exactly"
    exactly.write_bytes(b"x" * naming.MAX_SECRET_BYTES)
    fits = cli("create", "secret", "--namespace", namespace, "big", "-f", str(exactly))
    assert fits.returncode == 0, fits.stderr
    assert len(value_of(cluster, namespace, "big")) == naming.MAX_SECRET_BYTES

    over = tmp_path / "over"
    over.write_bytes(b"x" * (naming.MAX_SECRET_BYTES + 1))
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "bigger", "-f", str(over)),
        ExitCode.TOO_LARGE,
        "1 MiB",
        str(over),
    )
    one_error_line(
        cli("update", "secret", "--namespace", namespace, "big", stdin=b"y" * (naming.MAX_SECRET_BYTES + 1)),
        ExitCode.TOO_LARGE,
        "stdin",
    )
    assert len(value_of(cluster, namespace, "big")) == naming.MAX_SECRET_BYTES  # unchanged


def test_only_sesame_managed_secrets_are_listed(cli: Cli, cluster: Cluster, namespace: str) -> None:
    cluster.create_secret(namespace, "plain", {"plain": "not sesame's"})
    assert cli("create", "secret", "--namespace", namespace, "mine", stdin=b"value").returncode == 0
    listed = json.loads(cli("get", "secret", "--namespace", namespace, "-o", "json").stdout)
    assert [item["name"] for item in listed] == ["mine"]
    one_error_line(cli("get", "secret", "--namespace", namespace, "plain"), ExitCode.NOT_FOUND, "not managed")


def test_the_canary_never_shows_in_any_output(
    cli: Cli, cluster: Cluster, namespace: str, canary: str, outputs: list[bytes]
) -> None:
    value = canary.encode()
    assert cli("create", "secret", *where(namespace), "canary_key", stdin=value).returncode == 0
    for output in ("table", "json", "yaml"):
        assert cli("get", "secret", *where(namespace), "-o", output).returncode == 0
        assert cli("get", "secret", *where(namespace), "canary_key", "-o", output).returncode == 0
    assert (
        cli("create", "secret", *where(namespace), "canary_key", stdin=value).returncode
        == ExitCode.ALREADY_EXISTS
    )
    assert (
        cli("create", "secret", *where(namespace), "CANARY_KEY", stdin=value).returncode == ExitCode.KEY_CLASH
    )
    assert cli("update", "secret", *where(namespace), "canary_key", stdin=value + b"!").returncode == 0
    assert cli("update", "secret", *where(namespace), "absent", stdin=value).returncode == ExitCode.NOT_FOUND
    assert cli("delete", "secret", *where(namespace), "canary_key").returncode == 0
    assert len(outputs) == 12
    # the `cli` fixture checks every output for the canary when the test ends


# -- errors: one line, a distinct exit code, no traceback ------------------------------------------


def test_unknown_namespace_says_how_it_was_derived(cli: Cli, cluster: Cluster) -> None:
    absent = ["--project", "no_such", "--domain", "place"]
    one_error_line(
        cli("create", "secret", *absent, "k", stdin=b"value"),
        ExitCode.NAMESPACE_NOT_FOUND,
        "namespace 'no-such-place' not found",
        "from --project no_such --domain place with template {project}-{domain}",
    )
    for command in (
        ["get", "secret"],
        ["get", "secret", "k"],
        ["update", "secret", "k"],
        ["delete", "secret", "k"],
    ):
        one_error_line(cli(*command, *absent, stdin=b"value"), ExitCode.NAMESPACE_NOT_FOUND, "no-such-place")

    env = {**cluster.env(), naming.NAMESPACE_TEMPLATE_ENV: "team-{domain}-{project}"}
    one_error_line(
        cli("get", "secret", *absent, env=env),
        ExitCode.NAMESPACE_NOT_FOUND,
        "'team-place-no-such'",
        "with template team-{domain}-{project} from SESAME_NAMESPACE_TEMPLATE",
    )
    one_error_line(
        cli("get", "secret", *absent, "--namespace-template", "x-{project}-{domain}", env=env),
        ExitCode.NAMESPACE_NOT_FOUND,
        "'x-no-such-place'",
        "from --namespace-template",
    )
    one_error_line(
        cli("get", "secret", "--namespace", "no-such-ns"),
        ExitCode.NAMESPACE_NOT_FOUND,
        "'no-such-ns'",
        "given with --namespace",
    )


def test_the_namespace_template_is_used(cli: Cli, cluster: Cluster, namespace: str) -> None:
    project, domain = namespace.split("-", 1)
    # One placeholder, on purpose (the template then names one namespace per project).
    env = {
        **cluster.env(),
        naming.NAMESPACE_TEMPLATE_ENV: "{project}",
        "SESAME_NAMESPACE_TEMPLATE_PARTIAL": "1",
    }
    swapped = ["--project", namespace, "--domain", "ignored"]
    assert cli("create", "secret", *swapped, "k", stdin=b"value", env=env).returncode == 0
    assert value_of(cluster, namespace, "k") == b"value"
    flag = ["--namespace-template", "{project}-{domain}", "--project", project, "--domain", domain]
    assert cli("get", "secret", *flag, "k", env=env).returncode == 0


def test_existing_secret_on_create(cli: Cli, cluster: Cluster, namespace: str) -> None:
    assert cli("create", "secret", "--namespace", namespace, "k", stdin=b"first").returncode == 0
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "k", stdin=b"second"),
        ExitCode.ALREADY_EXISTS,
        "'k' already exists",
        "sesame update secret",
    )
    assert value_of(cluster, namespace, "k") == b"first"


def test_missing_secret_on_get_update_delete(cli: Cli, namespace: str) -> None:
    for command in (["update", "secret"], ["delete", "secret"], ["get", "secret"]):
        one_error_line(
            cli(*command, "--namespace", namespace, "absent", stdin=b"value"),
            ExitCode.NOT_FOUND,
            "'absent' not found",
            namespace,
        )
    # each hint fits what the user was doing: update → create it; delete → nothing to do
    one_error_line(
        cli("update", "secret", "--namespace", namespace, "absent", stdin=b"value"),
        ExitCode.NOT_FOUND,
        f"create it with `sesame create secret --namespace {namespace} absent`",
    )
    deleted = one_error_line(
        cli("delete", "secret", "--namespace", namespace, "absent"),
        ExitCode.NOT_FOUND,
        f"nothing to delete; list the secrets with `sesame get secret --namespace {namespace}`",
    )
    assert "create" not in deleted


@pytest.mark.parametrize("key", ["bad/key", "has space", "trailing_", "a..b", "x" * 254])
def test_invalid_key(cli: Cli, namespace: str, key: str) -> None:
    for command in (["create", "secret"], ["update", "secret"], ["delete", "secret"], ["get", "secret"]):
        # refused before reading any value: empty stdin would otherwise be "empty value"
        one_error_line(
            cli(*command, "--namespace", namespace, "--", key), ExitCode.INVALID_KEY, "invalid secret name"
        )


def test_keys_that_share_an_object_name_clash(cli: Cli, cluster: Cluster, namespace: str) -> None:
    assert cli("create", "secret", "--namespace", namespace, "my_secret", stdin=b"first").returncode == 0
    for other in ("MY_SECRET", "my-secret"):
        one_error_line(
            cli("create", "secret", "--namespace", namespace, other, stdin=b"second"),
            ExitCode.KEY_CLASH,
            f"'{other}' clashes with existing secret 'my_secret'",
            "'my-secret'",
        )
        one_error_line(
            cli("update", "secret", "--namespace", namespace, other, stdin=b"second"),
            ExitCode.KEY_CLASH,
            "'my_secret'",
        )
        one_error_line(
            cli("delete", "secret", "--namespace", namespace, other), ExitCode.KEY_CLASH, "'my_secret'"
        )
    assert value_of(cluster, namespace, "my_secret") == b"first"


def test_keys_that_share_an_env_var_name_clash(cli: Cli, cluster: Cluster, namespace: str) -> None:
    """`my.secret` and `my_secret` would both be delivered as SESAME_SECRET_MY_SECRET: the second
    is refused, naming the first, whichever comes first."""
    assert cli("create", "secret", "--namespace", namespace, "my_secret", stdin=b"first").returncode == 0
    for other in ("my.secret", "My.Secret"):
        one_error_line(
            cli("create", "secret", "--namespace", namespace, other, stdin=b"second"),
            ExitCode.KEY_CLASH,
            f"secret '{other}' clashes with existing secret 'my_secret'",
            "env var 'SESAME_SECRET_MY_SECRET'",
        )
    assert cli("delete", "secret", "--namespace", namespace, "my_secret").returncode == 0
    assert cli("create", "secret", "--namespace", namespace, "my.secret", stdin=b"third").returncode == 0
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "my_secret", stdin=b"fourth"),
        ExitCode.KEY_CLASH,
        "secret 'my_secret' clashes with existing secret 'my.secret'",
    )
    names = [
        s.metadata.name
        for s in cluster.core.list_namespaced_secret(namespace, label_selector=MANAGED_SELECTOR).items
    ]
    assert names == ["my.secret"]
    assert value_of(cluster, namespace, "my.secret") == b"third"


def test_a_secret_sesame_does_not_manage_is_left_alone(cli: Cli, cluster: Cluster, namespace: str) -> None:
    cluster.create_secret(namespace, "db-creds", {"password": "theirs"})
    for command in (["create", "secret"], ["update", "secret"]):
        one_error_line(
            cli(*command, "--namespace", namespace, "db-creds", stdin=b"mine"),
            ExitCode.KEY_CLASH,
            "not managed by sesame",
        )
    one_error_line(
        cli("delete", "secret", "--namespace", namespace, "db-creds"), ExitCode.KEY_CLASH, "not managed"
    )
    assert stored(cluster, namespace, "db-creds").data == {"password": base64.b64encode(b"theirs").decode()}


def test_unreadable_file(cli: Cli, namespace: str, tmp_path: Path) -> None:
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "k", "-f", str(tmp_path / "absent")),
        ExitCode.FILE_UNREADABLE,
        f"cannot read {tmp_path / 'absent'}: no such file or directory",
    )
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "k", "-f", str(tmp_path)),
        ExitCode.FILE_UNREADABLE,
        "is a directory",
    )
    locked = tmp_path / "locked"
    locked.write_bytes(b"value")
    locked.chmod(0)
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "k", "-f", str(locked), runner=AS_A_USER),
        ExitCode.FILE_UNREADABLE,
        "permission denied",
    )


def test_empty_value(cli: Cli, namespace: str, tmp_path: Path) -> None:
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "k", stdin=b""), ExitCode.EMPTY_VALUE, "stdin"
    )
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    one_error_line(
        cli("create", "secret", "--namespace", namespace, "k", "-f", str(empty)),
        ExitCode.EMPTY_VALUE,
        str(empty),
    )
    assert cli("create", "secret", "--namespace", namespace, "k", stdin=b"v").returncode == 0
    one_error_line(cli("update", "secret", "--namespace", namespace, "k", stdin=b""), ExitCode.EMPTY_VALUE)


def kubeconfig_with(
    cluster: Cluster, path: Path, server: str | None = None, token: str | None = None
) -> Path:
    """The cluster's kubeconfig, optionally with another server address or a bearer token user."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    if server is not None:
        for entry in config["clusters"]:
            entry["cluster"]["server"] = server
    if token is not None:
        config["users"] = [{"name": "token-user", "user": {"token": token}}]
        for entry in config["contexts"]:
            entry["context"]["user"] = "token-user"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cluster_unreachable(cli: Cli, cluster: Cluster, tmp_path: Path) -> None:
    refused = kubeconfig_with(cluster, tmp_path / "refused", server=f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    one_error_line(
        cli("get", "secret", "--namespace", "x", "--kubeconfig", str(refused)),
        ExitCode.UNREACHABLE,
        "cannot reach the Kubernetes API server at https://127.0.0.1:",
        "connection refused",
    )
    one_error_line(
        cli(
            "create",
            "secret",
            "--namespace",
            "x",
            "k",
            stdin=b"value",
            env={**cluster.env(), "KUBECONFIG": str(refused)},
        ),
        ExitCode.UNREACHABLE,
        "connection refused",
    )
    assert time.monotonic() - started < 20

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hanging = kubeconfig_with(
            cluster, tmp_path / "hanging", server=f"https://127.0.0.1:{silent.getsockname()[1]}"
        )
        started = time.monotonic()
        one_error_line(
            cli("get", "secret", "--namespace", "x", "--kubeconfig", str(hanging), "--request-timeout", "1"),
            ExitCode.UNREACHABLE,
            "timed out after 1s",
        )
        assert time.monotonic() - started < 15


def test_kubeconfig_and_context(cli: Cli, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    assert cli("create", "secret", "--namespace", namespace, "k", stdin=b"value").returncode == 0
    # two contexts; the current one points nowhere, --context picks the live one
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    live = config["contexts"][0]
    dead_cluster = {
        "name": "dead",
        "cluster": {**config["clusters"][0]["cluster"], "server": f"https://127.0.0.1:{free_port()}"},
    }
    config["clusters"].append(dead_cluster)
    config["contexts"].append({"name": "dead", "context": {**live["context"], "cluster": "dead"}})
    config["current-context"] = "dead"
    both = tmp_path / "both"
    both.write_text(yaml.safe_dump(config))
    env = {**cluster.env(), "KUBECONFIG": str(both)}
    assert cli("get", "secret", "--namespace", namespace, "k", env=env).returncode == ExitCode.UNREACHABLE
    picked = cli("get", "secret", "--namespace", namespace, "k", "--context", live["name"], env=env)
    assert picked.returncode == 0, picked.stderr
    # KUBECONFIG is read when the command runs; --kubeconfig wins over it
    flag = cli(
        "get", "secret", "--namespace", namespace, "k", "--kubeconfig", str(cluster.kubeconfig), env=env
    )
    assert flag.returncode == 0, flag.stderr

    one_error_line(
        cli("get", "secret", "--namespace", namespace, "--context", "nope"),
        ExitCode.CONFIG,
        "context 'nope' not found",
    )
    one_error_line(
        cli("get", "secret", "--namespace", namespace, "--kubeconfig", str(tmp_path / "absent")),
        ExitCode.CONFIG,
        "does not exist",
    )
    garbage = tmp_path / "garbage"
    garbage.write_text("{not: [a kubeconfig")
    one_error_line(
        cli("get", "secret", "--namespace", namespace, env={**cluster.env(), "KUBECONFIG": str(garbage)}),
        ExitCode.CONFIG,
        "cannot load kubeconfig",
    )


def test_permission_denied_names_verb_resource_and_namespace(
    cli: Cli, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    status = cluster.core.create_namespaced_service_account_token("nobody", namespace, request).status
    assert status is not None
    token = status.token
    env = {**cluster.env(), "KUBECONFIG": str(kubeconfig_with(cluster, tmp_path / "nobody", token=token))}
    one_error_line(  # create lists the namespace's secrets first: no stored key may clash with it
        cli("create", "secret", "--namespace", namespace, "k", stdin=b"value", env=env),
        ExitCode.PERMISSION_DENIED,
        f"permission denied: cannot list secrets in namespace '{namespace}', which create needs",
        f"system:serviceaccount:{namespace}:nobody",
    )
    one_error_line(
        cli("get", "secret", "--namespace", namespace, env=env),
        ExitCode.PERMISSION_DENIED,
        f"cannot list secrets in namespace '{namespace}'",
    )
    for command in (["get", "secret", "k"], ["update", "secret", "k"], ["delete", "secret", "k"]):
        one_error_line(
            cli(*command, "--namespace", namespace, stdin=b"value", env=env),
            ExitCode.PERMISSION_DENIED,
            f"cannot get secrets in namespace '{namespace}'",
        )

    bogus = {
        **cluster.env(),
        "KUBECONFIG": str(kubeconfig_with(cluster, tmp_path / "bogus", token="not-a-token")),
    }
    one_error_line(
        cli("get", "secret", "--namespace", namespace, env=bogus), ExitCode.UNAUTHORIZED, "unauthorized"
    )


def test_usage_errors(cli: Cli) -> None:
    one_error_line(cli("get", "secret"), ExitCode.USAGE, "give --project and --domain (or --namespace)")
    one_error_line(cli("get", "secret", "--project", "p"), ExitCode.USAGE, "--domain")
    one_error_line(
        cli("get", "secret", "--namespace", "Not_Valid"), ExitCode.USAGE, "not a valid namespace name"
    )
    one_error_line(
        cli("get", "secret", "--project", "p", "--domain", "d", "--namespace-template", "{nope}"),
        ExitCode.USAGE,
        "template",
    )
    one_error_line(
        cli("get", "secret", "--namespace", "x", "-o", "wide"),
        ExitCode.USAGE,
        "invalid choice: 'wide'",
        "see `sesame get secret --help`",
    )
    one_error_line(cli("create", "secret", "--namespace", "x"), ExitCode.USAGE, "NAME")  # NAME missing
    one_error_line(cli("frobnicate"), ExitCode.USAGE, "invalid choice: 'frobnicate'")
    for seconds in ("-5", "0", "nan", "inf", "soon"):
        one_error_line(
            cli("get", "secret", "--namespace", "x", "--request-timeout", seconds),
            ExitCode.USAGE,
            f"argument --request-timeout: must be a positive number of seconds, not '{seconds}'",
        )
    # --namespace and --project/--domain name the namespace twice: refused, whichever comes first
    one_error_line(
        cli("get", "secret", "--project", "a", "--domain", "b", "-n", "other"),
        ExitCode.USAGE,
        "--namespace other conflicts with --project and --domain",
    )
    one_error_line(
        cli("create", "secret", "-n", "other", "k", "--namespace-template", "{project}"),
        ExitCode.USAGE,
        "--namespace other conflicts with --namespace-template",
    )


# -- help and the kubectl plugin -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["create"],
        ["get"],
        ["update"],
        ["delete"],
        ["create", "secret"],
        ["get", "secret"],
        ["update", "secret"],
        ["delete", "secret"],
    ],
)
def test_help_has_examples(cli: Cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "examples:" in text
    assert f"sesame {command[0] if command else 'create'} secret" in text
    if len(command) != 1:
        assert "exit codes:" in text
        for code in ExitCode:
            assert f"{int(code):>3}  " in text


def test_kubectl_plugin(cli: Cli, cluster: Cluster, namespace: str) -> None:
    assert cli("create", "secret", "--namespace", namespace, "via_plugin", stdin=b"value").returncode == 0
    env = {**cluster.env(), "PATH": f"{BIN}:{cluster.bin_dir}:{os.environ['PATH']}"}
    listed = subprocess.run(
        [cluster.kubectl(), "sesame", "get", "secret", "--namespace", namespace],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().splitlines()[1].split()[0] == "via_plugin"
    helped = subprocess.run([cluster.kubectl(), "sesame", "--help"], env=env, capture_output=True, timeout=60)
    assert helped.returncode == 0
    assert "kubectl sesame create secret" in helped.stdout.decode()
    missing = subprocess.run(
        [cluster.kubectl(), "sesame", "get", "secret", "--namespace", namespace, "absent"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == ExitCode.NOT_FOUND
    assert missing.stderr.decode().startswith("error: secret 'absent' not found")


def test_error_messages_are_scrubbed_of_the_value() -> None:
    from sesame.cli.main import scrub

    value = b"hunter2-secret"
    message = f"server said: {value.decode()} and {base64.b64encode(value).decode()}\nnext line"
    assert scrub(message, value) == "server said: *** and *** next line"
