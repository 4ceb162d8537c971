"""Exit codes of the `sesame` command, in one place, and the error that carries them."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything not listed below (an unexpected answer from the API server)
    USAGE = 2  # bad flags or arguments (argparse uses 2 as well)
    NAMESPACE_NOT_FOUND = 3
    ALREADY_EXISTS = 4
    NOT_FOUND = 5
    INVALID_KEY = 6
    KEY_CLASH = 7
    TOO_LARGE = 8
    FILE_UNREADABLE = 9
    EMPTY_VALUE = 10
    UNREACHABLE = 11
    CONFIG = 12
    PERMISSION_DENIED = 13
    UNAUTHORIZED = 14
    VALUE_REFUSED = 15
    NOT_INSTALLED = 16
    NOT_A_TASK = 17  # sesame run
    TASK_LOAD_FAILED = 18
    CODE_TOO_LARGE = 19
    SECRET_MISSING = 20
    TASK_FAILED = 21
    TASK_RETURNED_SECRET = 65  # = sesame.runner.EXIT_RETURNED_SECRET, the pod's code for it
    INTERRUPTED = 130


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (the message says what the API server answered)",
    ExitCode.USAGE: "invalid command line (flags, missing --project/--domain, bad namespace template)",
    ExitCode.NAMESPACE_NOT_FOUND: "the project/domain namespace does not exist",
    ExitCode.ALREADY_EXISTS: "create: the secret already exists (use update)",
    ExitCode.NOT_FOUND: "get/update/delete: no such secret",
    ExitCode.INVALID_KEY: "the secret name (key) is not valid",
    ExitCode.KEY_CLASH: "another stored key maps to the same Secret or env var name, or a Secret not "
    "managed by sesame has the name",
    ExitCode.TOO_LARGE: "the value is over Kubernetes' 1 MiB limit",
    ExitCode.FILE_UNREADABLE: "the -f file cannot be read",
    ExitCode.EMPTY_VALUE: "the value is empty or only whitespace",
    ExitCode.UNREACHABLE: "the cluster cannot be reached (connection refused, timeout, TLS)",
    ExitCode.CONFIG: "no usable kubeconfig or context",
    ExitCode.PERMISSION_DENIED: "the API server refused the request (403 Forbidden)",
    ExitCode.UNAUTHORIZED: "the API server did not accept the credentials (401)",
    ExitCode.VALUE_REFUSED: "the prompt refused the value (several lines, a line the terminal may have "
    "cut, no way to hide typing): use -f FILE or stdin",
    ExitCode.NOT_INSTALLED: "a part of Sesame is not installed: the message names the pip extra",
    ExitCode.NOT_A_TASK: "run: TASK is not a @sesame.task in FILE",
    ExitCode.TASK_LOAD_FAILED: "run: FILE cannot be imported (the message names the error and line)",
    ExitCode.CODE_TOO_LARGE: "run --remote: FILE and the SDK are over the 1 MiB a ConfigMap holds",
    ExitCode.SECRET_MISSING: "run: a requested secret is missing (locally: not set; --remote with "
    "--no-wait-for-secrets: not stored)",
    ExitCode.TASK_FAILED: "run --remote: the run failed without an exit code of its own (e.g. its pod "
    "was deleted)",
    ExitCode.TASK_RETURNED_SECRET: "run: the task returned a secret's value (not printed)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C; run --remote: the run goes on)",
}


def exit_code_table() -> str:
    lines = ["exit codes:"]
    lines += [f"  {int(code):>3}  {MEANINGS[code]}" for code in ExitCode]
    return "\n".join(lines)


class CliError(Exception):
    """A failure the user can act on: one line on stderr (`error: …`) and a distinct exit code.

    Messages are built from names only; they never hold a secret value.
    """

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
