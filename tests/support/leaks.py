"""Leak canary: no planted secret value may show up anywhere a user or an operator could look.

Every value the `canary` fixture hands out is planted here. Texts are checked as soon as they are
recorded — a canary is a fresh random string, so a text can only contain canaries planted before it
was produced — and only the findings are kept, so hours of DEBUG logs cost no memory. Recorded:

- the output of every in-process operator (`running_operator`) and operator subprocess,
- the captured stdout/stderr/log of every test (pytest's report sections),
- the output of every `sesame` subprocess (the CLI, `kubectl sesame`, `python -m sesame …`),
- events, TaskRuns (status and metadata) and whole pods of each test namespace before it is deleted,
  and of every namespace still present when the session ends,
- anything a test passes to `record(where, text)` itself (webhook responses, CLI output, ...).

At the end of the session `check()` fails the run naming where each canary was seen.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from tests.support.bulk import list_items


def needles(value: str | bytes) -> list[str]:
    """The value, and its base64 at each of the 3 alignments it can have inside a longer blob.

    At alignment k (k bytes of something else before it, mod 3) only the base64 characters of
    groups made entirely of the value's bytes are fixed; the edge groups depend on the neighbours.
    """
    raw = value.encode() if isinstance(value, str) else value
    found = [raw.decode("latin-1")] if isinstance(value, str) else []
    for offset in (0, 1, 2):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        middle = encoded[4 if offset else 0 : (offset + len(raw)) // 3 * 4]
        if len(middle) >= 16:
            found.append(middle)
    return found


@dataclass
class Registry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    canaries: dict[str, list[str]] = field(default_factory=dict)  # label → needles
    findings: list[str] = field(default_factory=list)
    texts_checked: int = 0
    bytes_checked: int = 0

    def plant(self, value: str | bytes, label: str | None = None) -> None:
        """A secret value that must never appear outside its Secret."""
        name = label or (value if isinstance(value, str) else f"binary canary #{len(self.canaries)}")
        with self.lock:
            self.canaries[name] = needles(value)

    def record(self, where: str, text: str | bytes | None) -> None:
        if not text:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        with self.lock:
            self.texts_checked += 1
            self.bytes_checked += len(text)
            for name, spellings in self.canaries.items():
                for spelling in spellings:
                    if spelling in text:
                        at = text.index(spelling)
                        self.findings.append(
                            f"{name[:60]} in {where} (as {'itself' if spelling == name else 'base64'}): "
                            f"…{text[max(0, at - 80) : at + len(spelling) + 20]!r}…"
                        )
                        break

    def check(self) -> None:
        if self.findings:
            listing = "\n".join(f"  - {finding}" for finding in self.findings[:30])
            raise AssertionError(
                f"{len(self.findings)} secret value leak(s) found by the leak canary "
                f"({len(self.canaries)} canaries, {self.texts_checked} texts):\n{listing}"
            )


REGISTRY = Registry()


def plant(value: str) -> str:
    REGISTRY.plant(value)
    return value


def record(where: str, text: str | bytes | None) -> None:
    REGISTRY.record(where, text)


# --- what the cluster shows ---------------------------------------------------------------------


def collect(api: client.ApiClient, namespace: str | None = None) -> None:
    """Record events, TaskRuns and pods of one namespace (or of all): never Secrets."""
    scope = f"/namespaces/{namespace}" if namespace else ""
    where = namespace or "all namespaces"
    paths = {
        "events": f"/api/v1{scope}/events",
        "pods": f"/api/v1{scope}/pods",
        "taskruns": f"/apis/sesame.dev/v1alpha1{scope}/taskruns",
    }
    for kind, path in paths.items():
        try:
            items = list_items(api, path)
        except Exception as error:  # a cluster that is gone cannot leak any more
            record(f"listing {kind} in {where}", str(error))
            continue
        for item in items:
            shown = item
            if kind == "taskruns":  # the spec is the user's own text; status and metadata are ours
                shown = {"metadata": item.get("metadata"), "status": item.get("status")}
            meta = item.get("metadata") or {}
            record(f"{kind[:-1]} {meta.get('namespace')}/{meta.get('name')}", json.dumps(shown))


# --- subprocess output --------------------------------------------------------------------------


def _is_sesame(args: Any) -> bool:
    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    return any(w == "sesame" or w.endswith("/sesame") or w.startswith("sesame.") for w in words)


@contextlib.contextmanager
def watching_subprocesses() -> Iterator[None]:
    """Record what every `sesame …` subprocess printed (collected through `communicate()`)."""
    original = subprocess.Popen.communicate

    def communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
        out, err = original(self, *args, **kwargs)
        if _is_sesame(self.args):
            command = " ".join(str(a) for a in self.args) if isinstance(self.args, Sequence) else self.args
            record(f"output of `{str(command)[:80]}`", out)
            record(f"stderr of `{str(command)[:80]}`", err)
        return out, err

    subprocess.Popen.communicate = communicate  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.communicate = original  # type: ignore[method-assign]
