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
    INTERRUPTED = 130


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (the message says what the API server answered)",
    ExitCode.USAGE: "invalid command line (flags, missing --project/--domain, bad namespace template)",
    ExitCode.NAMESPACE_NOT_FOUND: "the project/domain namespace does not exist",
    ExitCode.ALREADY_EXISTS: "create: the secret already exists (use update)",
    ExitCode.NOT_FOUND: "get/update/delete: no such secret",
    ExitCode.INVALID_KEY: "the secret name (key) is not valid",
    ExitCode.KEY_CLASH: "another key (or a Secret not managed by sesame) already uses the object name",
    ExitCode.TOO_LARGE: "the value is over Kubernetes' 1 MiB limit",
    ExitCode.FILE_UNREADABLE: "the -f file cannot be read",
    ExitCode.EMPTY_VALUE: "the value is empty",
    ExitCode.UNREACHABLE: "the cluster cannot be reached (connection refused, timeout, TLS)",
    ExitCode.CONFIG: "no usable kubeconfig or context",
    ExitCode.PERMISSION_DENIED: "the API server refused the request (403 Forbidden)",
    ExitCode.UNAUTHORIZED: "the API server did not accept the credentials (401)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
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
