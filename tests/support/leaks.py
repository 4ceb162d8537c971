"""Leak canary: no planted secret value may show up anywhere a user or an operator could look.

Every value the `canary` fixture hands out is planted here. Texts are checked as soon as they are
recorded — a canary is a fresh random string, so a text can only contain canaries planted before it
was produced — and only the findings are kept, so hours of DEBUG logs cost no memory. Recorded:

- the log of every in-process operator (`running_operator`, also when the test failed or the
  operator hung) and every operator process (`operator_process`, across its restarts),
- the captured stdout/stderr/log of every test (pytest's report sections),
- the output of every `sesame` subprocess collected through `communicate()` (the CLI, `kubectl
  sesame`, `python -m sesame …`); tests that read a process's output otherwise record it themselves
  (a pseudo-terminal, the demo, the benchmark and their operators),
- of every namespace a test created (whoever created it) before it is deleted, and of every
  namespace still present when the session ends: events, TaskRuns (status and metadata), whole
  pods, ConfigMaps (data too: a value there is a leak) and the metadata of Secrets (labels and
  annotations — never their data, which legitimately holds the values); at the end also the
  webhook configurations,
- anything a test passes to `record(where, text)` itself (webhook responses, CLI output, ...).

A canary is found in every spelling it may take: itself, upper- and lower-case, JSON- and
URL-escaped, as UTF-8 read as latin-1 (mojibake), as hex, and as base64 (standard and URL-safe, at
each alignment inside a longer blob, wrapped in lines or not); a binary canary also as raw bytes and
as Python's bytes repr. Random canaries (the fixture's) are also found in part: any piece of one of
those spellings that stands for at least MIN_PIECE bytes of the value.

A listing that fails is a finding too: what could not be looked at cannot be said to be clean.
At the end of the session `check()` fails the run naming where each canary was seen.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.bulk import list_items

# A leaked piece of a random canary counts from this many bytes of the value: "CANARY-" and 9 random
# hex digits (36 bits) — no other text carries that by chance.
MIN_PIECE = 16
# The index: windows of GRAM bytes at every STRIDE-th position of a text. Any match of at least
# GRAM + STRIDE - 1 bytes (every spelling below is at least that long) covers one window whole.
GRAM = 8
STRIDE = 8


def fold(data: bytes) -> bytes:
    """What matching compares: line breaks removed (raw, or JSON/repr-escaped ones, so base64
    wrapped at 76 columns is found), ASCII lower-cased (so upper-case and upper-case hex are)."""
    for line_break in (b"\r", b"\n", b"\\r", b"\\n"):
        data = data.replace(line_break, b"")
    return data.lower()


@dataclass(frozen=True)
class Spelling:
    """One way a canary's value may appear in a text, folded; `shortest` is the length of a piece
    of it that counts as a leak (its whole length unless the canary is random)."""

    canary: str
    kind: str
    folded: bytes
    shortest: int


def _base64_middles(raw: bytes, encode: Callable[[bytes], bytes]) -> list[bytes]:
    """The value's base64 at each of the 3 alignments it can have inside a longer blob: only the
    characters of groups made entirely of the value's bytes are fixed, the edge ones depend on the
    neighbours."""
    middles = []
    for offset in (0, 1, 2):
        encoded = encode(b"\0" * offset + raw)
        middles.append(encoded[4 if offset else 0 : (offset + len(raw)) // 3 * 4])
    return middles


def spellings(value: str | bytes, label: str, partial: bool) -> list[Spelling]:
    """Every spelling of `value` that is searched for (deduplicated after folding)."""
    raw = value.encode() if isinstance(value, str) else value
    forms: list[tuple[str, bytes, float]] = []  # kind, bytes, characters per byte of the value
    if isinstance(value, str):
        forms += [
            ("itself", raw, 1),
            ("upper-case", value.upper().encode(), 1),
            ("lower-case", value.lower().encode(), 1),
            ("JSON-escaped", json.dumps(value).encode()[1:-1], 1),
            ("URL-encoded", urllib.parse.quote(value, safe="").encode(), 1),
            ("mojibake (UTF-8 read as latin-1)", raw.decode("latin-1").encode(), 1),
        ]
    else:
        forms += [
            ("raw bytes", raw, 1),
            ("bytes repr", repr(raw)[2:-1].encode(), 1),
            ("bytes read as latin-1", raw.decode("latin-1").encode(), 1),
        ]
    forms.append(("hex", binascii.hexlify(raw), 2))
    forms += [("base64", middle, 4 / 3) for middle in _base64_middles(raw, base64.b64encode)]
    forms += [("base64url", middle, 4 / 3) for middle in _base64_middles(raw, base64.urlsafe_b64encode)]
    found: dict[bytes, Spelling] = {}
    for kind, form, ratio in forms:
        folded = fold(form)
        if folded in found or not folded:
            continue
        shortest = min(len(folded), int(MIN_PIECE * ratio)) if partial else len(folded)
        found[folded] = Spelling(label, kind, folded, max(shortest, GRAM + STRIDE - 1))
    return list(found.values())


@dataclass
class Registry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    canaries: dict[str, list[Spelling]] = field(default_factory=dict)  # label → its spellings
    index: dict[bytes, list[tuple[Spelling, int]]] = field(default_factory=dict)  # window → (spelling, at)
    findings: list[str] = field(default_factory=list)
    texts_checked: int = 0
    bytes_checked: int = 0

    def plant(self, value: str | bytes, label: str | None = None, *, partial: bool = False) -> None:
        """A secret value that must never appear outside its Secret. `partial`: the value is random
        (no piece of it is anyone else's text), so a piece of MIN_PIECE bytes is a leak too."""
        raw = value.encode() if isinstance(value, str) else value
        if len(raw) < MIN_PIECE:
            raise ValueError(f"a canary needs at least {MIN_PIECE} bytes to be told apart from chance")
        name = label or (value if isinstance(value, str) else f"binary canary #{len(self.canaries)}")
        found = spellings(value, name, partial)
        with self.lock:
            self.canaries[name] = found
            for spelling in found:
                for at in range(len(spelling.folded) - GRAM + 1):
                    self.index.setdefault(spelling.folded[at : at + GRAM], []).append((spelling, at))

    def record(self, where: str, text: str | bytes | None) -> None:
        if not text:
            return
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        folded = fold(data)
        with self.lock:
            self.texts_checked += 1
            self.bytes_checked += len(data)
            best: dict[str, tuple[int, int, Spelling]] = {}  # canary → (length, start, spelling)
            index = self.index
            for position in range(0, len(folded) - GRAM + 1, STRIDE):
                hits = index.get(folded[position : position + GRAM])
                if hits:
                    for spelling, at in hits:
                        start, length = _extent(folded, position, spelling.folded, at)
                        if length >= spelling.shortest and length > best.get(spelling.canary, (0,))[0]:
                            best[spelling.canary] = (length, start, spelling)
            for name, (length, start, spelling) in best.items():
                whole = length == len(spelling.folded)
                how = (
                    spelling.kind
                    if whole
                    else f"a piece: {length} of {len(spelling.folded)} bytes, {spelling.kind}"
                )
                context = folded[max(0, start - 60) : start + length + 20].decode("utf-8", "replace")
                self.findings.append(f"{name[:60]!r} in {where} (as {how}): …{context!r}…")

    def unseen(self, where: str, error: BaseException) -> None:
        """Something that could not be looked at: it cannot be said to be clean."""
        with self.lock:
            said = " ".join(str(error).split())[:300]
            self.findings.append(f"could not check {where}: {type(error).__name__}: {said}")

    def check(self) -> None:
        if self.findings:
            listing = "\n".join(f"  - {finding}" for finding in self.findings[:30])
            raise AssertionError(
                f"{len(self.findings)} finding(s) of the leak canary ({len(self.canaries)} canaries, "
                f"{self.texts_checked} texts, {self.bytes_checked / 1e6:.1f} MB):\n{listing}"
            )


def _extent(text: bytes, position: int, form: bytes, at: int) -> tuple[int, int]:
    """(start, length) in `text` of the longest run equal to `form` around the window that matched
    `form[at:at+GRAM]` at `position`."""
    left = 0
    while left < at and left < position and text[position - left - 1] == form[at - left - 1]:
        left += 1
    right, end, form_end = 0, position + GRAM, at + GRAM
    while (
        form_end + right < len(form)
        and end + right < len(text)
        and text[end + right] == form[form_end + right]
    ):
        right += 1
    return position - left, left + GRAM + right


REGISTRY = Registry()


def plant(value: str, *, partial: bool = False) -> str:
    REGISTRY.plant(value, partial=partial)
    return value


def record(where: str, text: str | bytes | None) -> None:
    REGISTRY.record(where, text)


# --- what the cluster shows ---------------------------------------------------------------------

NAMESPACED = {
    "events": "/api/v1{scope}/events",
    "pods": "/api/v1{scope}/pods",
    "configmaps": "/api/v1{scope}/configmaps",
    "secrets": "/api/v1{scope}/secrets",
    "taskruns": "/apis/sesame.dev/v1alpha1{scope}/taskruns",
}
CLUSTER_WIDE = {
    kind: f"/apis/admissionregistration.k8s.io/v1/{kind}"
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
}
TRANSIENT = (0, 429, 500, 502, 503, 504)


def shown(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """What of an object is checked: a Secret's metadata and type only (its data holds the values),
    a TaskRun's metadata and status (its spec is the user's own text), everything else whole."""
    if kind == "secrets":
        return {"metadata": item.get("metadata"), "type": item.get("type")}
    if kind == "taskruns":
        return {"metadata": item.get("metadata"), "status": item.get("status")}
    return item


def _listing(api: client.ApiClient, path: str) -> list[dict[str, Any]]:
    """The items at `path`, through a restarting API server; other errors are raised."""
    for attempt in range(40):
        try:
            return list_items(api, path)
        except ApiException as error:
            if error.status not in TRANSIENT or attempt == 39:
                raise
        except OSError:  # connection refused or reset while the API server restarts
            if attempt == 39:
                raise
        time.sleep(0.25)
    raise AssertionError("unreachable")


# Namespaces looked at during the current test (conftest's leak_canary_namespaces clears it).
COLLECTED: set[str] = set()


def namespaces(api: client.ApiClient) -> dict[str, str]:
    """Every namespace: name → uid (a name can come back as another namespace)."""
    try:
        items = _listing(api, "/api/v1/namespaces")
    except Exception as error:
        REGISTRY.unseen("the list of namespaces", error)
        return {}
    return {item["metadata"]["name"]: item["metadata"]["uid"] for item in items}


def collect(api: client.ApiClient, namespace: str | None = None) -> None:
    """Record what a user can see of one namespace (or of all, and the cluster-wide objects Sesame
    writes). A listing that fails is a finding."""
    if namespace:
        COLLECTED.add(namespace)
    scope = f"/namespaces/{namespace}" if namespace else ""
    where = namespace or "all namespaces"
    paths = {kind: path.format(scope=scope) for kind, path in NAMESPACED.items()}
    if namespace is None:
        paths |= CLUSTER_WIDE
    for kind, path in paths.items():
        try:
            items = _listing(api, path)
        except Exception as error:
            REGISTRY.unseen(f"{kind} in {where}", error)
            continue
        for item in items:
            meta = item.get("metadata") or {}
            record(
                f"{kind[:-1]} {meta.get('namespace') or ''}/{meta.get('name')}", json.dumps(shown(kind, item))
            )


# --- subprocess output --------------------------------------------------------------------------


def runs_sesame(args: Any) -> bool:
    """`sesame …`, `python -m sesame …`, `kubectl sesame …` (the plugin), `kubectl-sesame …`."""
    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    return any(
        w in ("sesame", "kubectl-sesame")
        or w.endswith(("/sesame", "/kubectl-sesame"))
        or w.startswith("sesame.")
        for w in words
    )


@contextlib.contextmanager
def watching_subprocesses() -> Iterator[None]:
    """Record what every `sesame …` subprocess printed (collected through `communicate()`)."""
    original = subprocess.Popen.communicate

    def communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
        out, err = original(self, *args, **kwargs)
        if runs_sesame(self.args):
            command = " ".join(str(a) for a in self.args) if isinstance(self.args, Sequence) else self.args
            record(f"output of `{str(command)[:80]}`", out)
            record(f"stderr of `{str(command)[:80]}`", err)
        return out, err

    subprocess.Popen.communicate = communicate  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.communicate = original  # type: ignore[method-assign]
