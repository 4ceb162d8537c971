"""Runs one task in its pod: `python3 -m sesame.runner FILE TASK [INPUTS_JSON]`.

`sesame run --remote` ships this module with the SDK and the task's file, and makes it the
container's command. It starts the task in a child process whose stdout and stderr pass through
here, where the values of the secrets delivered to the container are replaced by `****` — as CI
systems mask secrets in their logs — before they reach `kubectl logs`:

- masked forms of each value: the value itself; each of its lines (a multi-line value such as a
  PEM key is often printed a line at a time); its JSON/`repr` escaped form (`"a\\nb"`); its base64
  (standard and URL-safe, at each of the three alignments it can have inside a longer base64 text);
- a value split across writes is still masked: the end of a chunk that could begin a secret is
  held back until the next chunk (or the end) shows whether it does, and nothing else is delayed;
- nothing shorter than 4 bytes is masked (it would mangle every line): a value that short is not
  masked at all, and gets a warning naming its key. Forms over 64 KiB are masked through their
  lines only, and a value's first 256 distinct lines are its line forms (a CA bundle has
  thousands). Values are read
  once, when the task starts: a secret rotated while the task runs is masked with its old value.

The task runs in the child, so whatever it starts (subprocesses, C extensions writing to fd 1 or 2)
is masked too. A task whose return value contains a requested secret's value fails (exit 65)
with a message naming the key, and the value is never printed. Secrets are read only through the
SDK, and never logged. `sesame run` (local) uses the same masking and checks in-process.

Exit codes: the task's own (0; 1 when it raised; n for `sys.exit(n)`; 128+N when killed by signal
N); 64 when the file, task or inputs are wrong; 65 when the task returned a secret; 78 when a secret
delivered to the container cannot be read. Stdlib only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from types import FrameType
from typing import Any

from sesame.sdk import SecretDeliveryError, SecretNotFoundError, Secrets
from sesame.tasks import NotATaskError, Task, TaskLoadError, load_task

MASK = b"****"
MIN_MASKED = 4
MAX_FORM = 64 * 1024
MAX_LINES = 256  # of one value: masking cost grows with the number of forms
EXIT_USAGE = 64  # sysexits EX_USAGE
EXIT_RETURNED_SECRET = 65  # sysexits EX_DATAERR
EXIT_SECRET_UNREADABLE = 78  # sysexits EX_CONFIG
_CHILD = "--child"


def secret_forms(value: bytes) -> set[bytes]:
    """Every form of `value` the masker replaces (see the module docstring)."""
    if len(value) < MIN_MASKED:
        return set()
    texts = {value}
    lines = dict.fromkeys(line.rstrip(b"\r") for line in value.split(b"\n"))
    texts |= set(list(lines)[:MAX_LINES])
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        texts.add(json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8"))
        texts.add(repr(text)[1:-1].encode("utf-8"))
    forms = set(texts)
    for offset in (0, 1, 2):
        encoded = base64.b64encode(b"\0" * offset + value)
        if offset == 0:
            forms.add(encoded)  # the whole value encoded on its own, padding included
        # Inside a longer base64 text only the groups made entirely of the value's bytes are fixed.
        middle = encoded[4 if offset else 0 : (offset + len(value)) // 3 * 4]
        if len(middle) >= 2 * MIN_MASKED:
            forms.add(middle)
    forms |= {form.replace(b"+", b"-").replace(b"/", b"_") for form in forms if b"+" in form or b"/" in form}
    return {form for form in forms if MIN_MASKED <= len(form) <= MAX_FORM}


class Masker:
    """Replaces secret values in a stream of bytes, however the stream is cut into chunks."""

    def __init__(self, values: Iterable[bytes]) -> None:
        forms: set[bytes] = set()
        for value in values:
            forms |= secret_forms(value)
        ordered = sorted(forms, key=len, reverse=True)  # the longest form wins where several match
        self._pattern = re.compile(b"|".join(re.escape(form) for form in ordered)) if ordered else None
        firsts = b"".join(re.escape(bytes([byte])) for byte in sorted({form[0] for form in ordered}))
        self._firsts = re.compile(b"[" + firsts + b"]") if ordered else None
        self._longest = len(ordered[0]) if ordered else 0
        self._by_first: dict[int, list[bytes]] = {}  # longest first, like `ordered`
        for form in ordered:
            self._by_first.setdefault(form[0], []).append(form)
        self._pending = b""

    def found_in(self, data: bytes) -> bool:
        return self._pattern is not None and self._pattern.search(data) is not None

    def mask(self, data: bytes) -> bytes:
        """`data` with every form replaced (for a whole text)."""
        return data if self._pattern is None else self._pattern.sub(MASK, data)

    def feed(self, chunk: bytes) -> bytes:
        """What can be written now of the stream so far; the rest waits for the next chunk."""
        if self._pattern is None:
            return chunk
        data = self._pending + chunk
        output = bytearray()
        position = 0
        hold = self._held_from(data)
        for match in self._pattern.finditer(data):
            if match.start() >= hold:
                break
            output += data[position : match.start()] + MASK
            position = match.end()
        end = max(position, hold)
        output += data[position:end]
        self._pending = data[end:]
        return bytes(output)

    def flush(self) -> bytes:
        """The end of the stream: what was held back, masked."""
        rest, self._pending = self._pending, b""
        return self.mask(rest)

    def _held_from(self, data: bytes) -> int:
        """Where the longest tail of `data` that could still grow into a form begins (len: none)."""
        if self._firsts is None:
            return len(data)
        window = max(0, len(data) - self._longest + 1)
        for candidate in self._firsts.finditer(data, window):
            tail = data[candidate.start() :]
            for form in self._by_first[tail[0]]:
                if len(form) <= len(tail):
                    break  # the others are shorter still: the tail cannot be the start of one
                if form.startswith(tail):
                    return candidate.start()
        return len(data)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except BrokenPipeError:
            return
        data = data[written:]


def pump(source: int, target: int, masker: Masker) -> None:
    """Copy `source` to `target` until the end, masked; closes `source`."""
    try:
        while chunk := os.read(source, 65536):
            _write_all(target, masker.feed(chunk))
        _write_all(target, masker.flush())
    finally:
        os.close(source)


def short_secrets(values: Mapping[str, bytes]) -> list[str]:
    """Keys whose value is too short to mask."""
    return sorted(key for key, value in values.items() if len(value) < MIN_MASKED)


@contextlib.contextmanager
def masked_output(values: Iterable[bytes]) -> Iterator[None]:
    """While inside: this process's fd 1 and 2 (so child processes too) go through a Masker each."""
    values = list(values)
    sys.stdout.flush()
    sys.stderr.flush()
    saved: dict[int, int] = {}
    threads: list[threading.Thread] = []
    try:
        for fd in (1, 2):
            read_end, write_end = os.pipe()
            saved[fd] = os.dup(fd)
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(target=pump, args=(read_end, saved[fd], Masker(values)), daemon=True)
            thread.start()
            threads.append(thread)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)  # closes our write end: the pump sees the end once children let go
        for thread in threads:
            thread.join(timeout=5)
        for original in saved.values():
            os.close(original)


def _texts(value: Any, seen: set[int] | None = None) -> Iterator[bytes]:
    """Every text a return value holds, nested ones included, plus its repr and str."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, str):
        yield value.encode("utf-8", "surrogateescape")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        yield bytes(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _texts(key, seen)
            yield from _texts(item, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _texts(item, seen)
    for render in (repr, str):
        with contextlib.suppress(Exception):
            yield render(value).encode("utf-8", "surrogateescape")


def returned_secret(result: Any, values: Mapping[str, bytes]) -> str | None:
    """The key of a secret whose value `result` contains, or None."""
    if result is None:
        return None
    texts = list(_texts(result))
    for key, value in sorted(values.items()):
        masker = Masker([value])
        if any(masker.found_in(text) for text in texts):
            return key
    return None


def read_secrets(keys: Iterable[str], secrets: Secrets | None = None) -> dict[str, bytes]:
    """The values of `keys`, read through the SDK exactly as task code reads them."""
    secrets = Secrets() if secrets is None else secrets
    return {key: secrets.get_bytes(key) for key in keys}


def run_task(task: Task[..., Any], inputs: Mapping[str, Any], values: Mapping[str, bytes]) -> int:
    """Call the task; print its result unless it holds a secret; return the exit code."""
    try:
        result = task.function(**inputs)  # not task(): the traceback starts in the task's own code
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except Exception as error:
        tb = error.__traceback__.tb_next if error.__traceback__ else None  # from the task's own frame
        traceback.print_exception(type(error), error, tb)
        return 1
    key = returned_secret(result, values)
    if key is not None:
        print(
            f"sesame: task {task.name!r} returned a value that contains the secret {key!r}, so it fails "
            "and the value is not printed; return something derived from the secret, never the secret",
            file=sys.stderr,
        )
        return EXIT_RETURNED_SECRET
    if result is not None:
        print(f"sesame: task {task.name!r} returned {result!r}", flush=True)
    return 0


def _child(file: str, name: str, inputs_json: str) -> int:
    """In the child: load the task, read its secrets for the return check, run it."""
    try:
        task = load_task(file, name)
        inputs = json.loads(inputs_json)
        if not isinstance(inputs, dict):
            raise ValueError("inputs must be a JSON object")
    except (TaskLoadError, NotATaskError, ValueError) as error:
        print(f"sesame: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        values = read_secrets(request.key for request in task.secret_requests)
    except (SecretNotFoundError, SecretDeliveryError) as error:
        print(f"sesame: {error}", file=sys.stderr)
        return EXIT_SECRET_UNREADABLE
    return run_task(task, inputs, values)


def _supervise(argv: list[str]) -> int:
    """Read the delivered secrets, start the child, mask its output, exit with its code."""
    secrets = Secrets()
    try:
        values = read_secrets(secrets.delivered_keys(), secrets)
    except (SecretNotFoundError, SecretDeliveryError) as error:
        print(f"sesame: {error}", file=sys.stderr)
        return EXIT_SECRET_UNREADABLE
    for key in short_secrets(values):
        print(f"sesame: secret {key!r} is shorter than {MIN_MASKED} bytes; it is not masked", file=sys.stderr)
    child = subprocess.Popen(
        [sys.executable, "-u", "-m", "sesame.runner", _CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stderr is not None

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    threads = [
        threading.Thread(
            target=pump, args=(os.dup(stream.fileno()), fd, Masker(values.values())), daemon=True
        )
        for stream, fd in ((child.stdout, 1), (child.stderr, 2))
    ]
    child.stdout.close()
    child.stderr.close()
    for thread in threads:
        thread.start()
    code = child.wait()
    for thread in threads:
        thread.join(timeout=5)  # a process the task left behind may hold the pipe open
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    child = args[:1] == [_CHILD]
    if child:
        args = args[1:]
    if len(args) not in (2, 3):
        print("usage: python3 -m sesame.runner FILE TASK [INPUTS_JSON]", file=sys.stderr)
        return EXIT_USAGE
    if child:
        return _child(args[0], args[1], args[2] if len(args) == 3 else "{}")
    return _supervise(args)


if __name__ == "__main__":
    sys.exit(main())
