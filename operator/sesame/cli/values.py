"""Where a secret value comes from, and the rules that keep a user from storing a value they did
not mean to store (`sesame create secret --help` says the same to users):

- `-f FILE`: the file, byte for byte.
- stdin that is not a terminal: all of it, exactly as read. A single line ending in a newline (what
  `echo` writes) keeps its newline, and a warning on stderr says so: never a silent strip.
- a terminal: one line at a prompt that never echoes. A paste of several lines, a line as long as
  the terminal's line buffer (the kernel may have cut it) and a terminal whose echo cannot be turned
  off are refused, so what is stored is always what the user typed, whole.
- A value that is empty or only whitespace is refused, whatever its source.
"""

from __future__ import annotations

import os
import sys
from typing import Any, BinaryIO

from sesame import naming
from sesame.cli.errors import CliError, ExitCode

# Linux's terminal keeps at most 4095 characters of a line being typed and drops the rest.
LINUX_LINE_LIMIT = 4095
# After the first line, how long the prompt waits for more of a paste (tenths of a second).
PASTE_WAIT_DECISECONDS = 1
INSTEAD = "put the value in a file (-f FILE) or pipe it on stdin"


class ValueSource:
    """Reads the value once, when the command is ready for it, and remembers it only so that
    error messages can be scrubbed of it."""

    def __init__(self, file: str | None, prompt: str, stdin: BinaryIO, stdin_is_tty: bool) -> None:
        self.file = file
        self.prompt = prompt
        self.stdin = stdin
        self.stdin_is_tty = stdin_is_tty
        self.value: bytes | None = None

    def __call__(self) -> tuple[bytes, str]:
        limit = naming.MAX_SECRET_BYTES
        if self.file is not None:
            try:
                with open(self.file, "rb") as handle:
                    value = handle.read(limit + 1)
            except OSError as error:
                reason = (error.strerror or type(error).__name__).lower()
                raise CliError(ExitCode.FILE_UNREADABLE, f"cannot read {self.file}: {reason}") from None
            source, where = "file", f"file {self.file}"
        elif self.stdin_is_tty:
            typed = read_hidden_line(self.prompt)
            if typed is None:
                raise CliError(
                    ExitCode.EMPTY_VALUE, "no value typed (end of input at the prompt); nothing was stored"
                )
            value, source, where = typed, "value", "the value typed"
        else:
            value = self.stdin.read(limit + 1)
            source, where = "value", "stdin"
        self.value = value
        if len(value) > limit:
            raise CliError(
                ExitCode.TOO_LARGE,
                f"{where} is over {limit} bytes (1 MiB), the most a Kubernetes Secret can hold",
            )
        if not value:
            raise CliError(ExitCode.EMPTY_VALUE, f"{where} is empty; a secret needs a value")
        if value.isspace():
            raise CliError(ExitCode.EMPTY_VALUE, f"{where} is only whitespace; a secret needs a value")
        if where == "stdin" and value.endswith(b"\n") and value.count(b"\n") == 1:
            print(
                "warning: stdin ends with a newline, which is stored as part of the value "
                "(echo adds one: use printf '%s' or -f FILE to leave it out)",
                file=sys.stderr,
            )
        return value, source


def read_hidden_line(prompt: str) -> bytes | None:
    """One line typed at the terminal without echo (no newline), or None at end of input (Ctrl-D).

    Not `getpass`: when it cannot turn echo off it warns and reads with echo, showing the secret;
    and it silently keeps only the first line of a multi-line paste (discarding the rest, or leaving
    it for the shell to run as commands).
    """
    try:
        import termios
    except ImportError:  # no POSIX terminal control on this platform
        raise CliError(ExitCode.VALUE_REFUSED, _cannot_hide()) from None
    try:  # the controlling terminal, as getpass does; else stdin, which is a terminal here
        fd, owned = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY), True
    except OSError:
        fd, owned = sys.stdin.fileno(), False
    try:
        try:
            saved = termios.tcgetattr(fd)
            hidden = list(saved)
            hidden[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSAFLUSH, hidden)
        except termios.error:
            raise CliError(ExitCode.VALUE_REFUSED, _cannot_hide()) from None
        _show(fd, owned, prompt)
        try:
            line = _read_line(fd)
            more = _rest_of_paste(fd, hidden) if line.endswith(b"\n") else b""
            limit = _line_limit(fd)
        finally:
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)  # also drops anything typed meanwhile
            _show(fd, owned, "\n")  # what comes next starts on a line of its own
    finally:
        if owned:
            os.close(fd)
    if more:
        raise CliError(
            ExitCode.VALUE_REFUSED,
            f"the value pasted at the prompt has more than one line and was not stored; {INSTEAD}",
        )
    if not line:
        return None
    typed = line.removesuffix(b"\n")
    if len(typed) >= limit:
        raise CliError(
            ExitCode.VALUE_REFUSED,
            f"the value typed is {len(typed)} characters long, the most a terminal line holds, so it "
            f"may have been cut and was not stored; {INSTEAD}",
        )
    return typed


def _cannot_hide() -> str:
    return f"this terminal cannot hide what is typed, so the prompt is not used; {INSTEAD}"


def _show(fd: int, owned: bool, text: str) -> None:
    if owned:
        os.write(fd, text.encode())
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


def _read_line(fd: int) -> bytes:
    """Up to and including the newline; what was typed before end of input without one; or b""."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        line += chunk
    return line


def _rest_of_paste(fd: int, hidden: list[Any]) -> bytes:
    """Whatever arrived after the first line: the rest of a paste. The terminal leaves line mode
    for a moment so that a last line without a newline is seen too."""
    import termios

    raw = list(hidden)
    raw[3] = hidden[3] & ~termios.ICANON
    control_chars = list(hidden[6])
    control_chars[termios.VMIN] = 0
    control_chars[termios.VTIME] = PASTE_WAIT_DECISECONDS
    raw[6] = control_chars
    termios.tcsetattr(fd, termios.TCSANOW, raw)
    rest = b""
    while len(rest) <= naming.MAX_SECRET_BYTES:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        rest += chunk
    return rest


def _line_limit(fd: int) -> int:
    """How many characters the terminal keeps of one line (it drops what comes after)."""
    if sys.platform == "linux":
        return LINUX_LINE_LIMIT
    return max(os.fpathconf(fd, "PC_MAX_CANON") - 1, 1)
