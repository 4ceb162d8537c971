"""The leak canary (tests/support/leaks.py) finds a planted value in every spelling it may take,
and nothing in a clean text: each needle kind is proven by a leak planted here on purpose."""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import pytest

from tests.support import leaks
from tests.support.leaks import Registry

RANDOM = "CANARY-0123456789abcdef0123456789abcdef"
UNICODE = "pässwörd-Ünïcode-ß-ø-€-0123456789"
BINARY = b"\x00\xffbinary\x01canary\x02\x80\x81\x82\x83"


def found(text: str | bytes, value: str | bytes = RANDOM, *, partial: bool = False) -> list[str]:
    registry = Registry()
    registry.plant(value, label="the canary", partial=partial)
    registry.record("a text", text)
    return registry.findings


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz", b"prefix-of-some-length:"])
def test_base64_inside_a_longer_value_is_found(prefix: bytes) -> None:
    blob = base64.b64encode(prefix + RANDOM.encode() + b"-suffix").decode()
    registry = Registry()
    registry.plant(RANDOM)
    registry.record("a Secret-like blob", json.dumps({"data": {"k": blob}}))
    assert len(registry.findings) == 1
    assert "(as base64)" in registry.findings[0]
    with pytest.raises(AssertionError, match="1 finding"):
        registry.check()


LEAKS: dict[str, tuple[str | bytes, str | bytes]] = {
    # name: (planted value, text a product might show)
    "itself in a log line": (RANDOM, f"INFO token={RANDOM} sent"),
    "upper-case": (RANDOM, f"TOKEN={RANDOM.upper()}"),
    "lower-case": (RANDOM, f"token={RANDOM.lower()}"),
    "hex": (RANDOM, f"bytes: {RANDOM.encode().hex()}"),
    "upper-case hex": (RANDOM, f"bytes: {RANDOM.encode().hex().upper()}"),
    "base64url": (
        "CANARY-??>>??>>??>>0123456789",
        base64.urlsafe_b64encode(b"CANARY-??>>??>>??>>0123456789").decode(),
    ),
    # 57 bytes make one 76-column line: the canary's base64 is split across two lines
    "base64 wrapped at 76 columns": (
        RANDOM,
        base64.encodebytes(b"x" * 40 + RANDOM.encode() + b"y" * 70).decode(),
    ),
    "wrapped base64 inside JSON": (
        RANDOM,
        json.dumps({"blob": base64.encodebytes(b"x" * 41 + RANDOM.encode() + b"y" * 70).decode()}),
    ),
    "URL-encoded": (
        "CANARY value/with spaces&0123456789",
        "GET /?v=" + urllib.parse.quote("CANARY value/with spaces&0123456789", safe=""),
    ),
    "non-ASCII itself (the old latin-1 bug)": (UNICODE, f"value is {UNICODE}"),
    "non-ASCII as UTF-8 bytes": (UNICODE, f"value is {UNICODE}".encode()),
    "non-ASCII upper-case": (UNICODE, UNICODE.upper()),
    "non-ASCII JSON-escaped": (UNICODE, json.dumps({"v": UNICODE})),
    "non-ASCII mojibake": (UNICODE, UNICODE.encode().decode("latin-1")),
    "non-ASCII in base64": (UNICODE, base64.b64encode(b"!" + UNICODE.encode()).decode()),
    "binary as raw bytes": (BINARY, b"log: " + BINARY + b" end"),
    "binary as bytes repr": (BINARY, f"value={BINARY!r}"),
    "binary as hex": (BINARY, BINARY.hex()),
    "binary in base64": (BINARY, base64.b64encode(b"ab" + BINARY).decode()),
    "binary read as latin-1": (BINARY, BINARY.decode("latin-1")),
}
PIECES = {
    "a 16-character piece of a random canary": f"token={RANDOM[:16]}… (truncated)",
    "a piece from the middle": f"…{RANDOM[10:30]}…",
    "a piece of its upper-case hex": RANDOM.encode().hex().upper()[4:40],
    "a piece of its base64": base64.b64encode(RANDOM.encode()).decode()[12:40],
}


@pytest.mark.parametrize("name", LEAKS)
def test_every_spelling_is_found_whole(name: str) -> None:
    value, text = LEAKS[name]
    findings = found(text, value)
    assert len(findings) == 1, (name, findings)
    assert "'the canary' in a text" in findings[0]
    assert "a piece" not in findings[0]


@pytest.mark.parametrize("name", PIECES)
def test_a_piece_of_a_random_canary_is_found(name: str) -> None:
    assert len(found(PIECES[name], partial=True)) == 1
    assert found(PIECES[name], partial=False) == []


def test_a_piece_shorter_than_the_minimum_is_not_a_leak() -> None:
    assert found(f"token={RANDOM[:15]}…", partial=True) == []
    assert found(f"token={RANDOM[:16]}…", partial=True) != []


def test_a_composed_value_counts_whole_only() -> None:
    """A value made of a canary and public text (a PEM frame, a JSON key) is planted whole: a piece
    of its public part is anyone's text (every certificate begins with `-----BEGIN`)."""
    value = f"-----BEGIN CERTIFICATE-----\n{RANDOM}\n-----END CERTIFICATE-----\n"
    public = "-----BEGIN CERTIFICATE-----\nMIIB" + base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    assert found(public, value, partial=False) == []
    assert len(found(f"cert: {value}", value, partial=False)) == 1
    assert len(found(json.dumps({"cert": value}), value, partial=False)) == 1


def test_clean_texts_pass() -> None:
    registry = Registry()
    registry.plant(RANDOM, partial=True)
    registry.plant(UNICODE, partial=True)
    registry.plant(BINARY)
    for text in [
        "nothing to see here",
        "CANARY-ffffffffffffffffffffffffff",  # another canary of the same shape
        RANDOM[:15],
        base64.b64encode(b"an unrelated blob of bytes " * 20).decode(),
        bytes(range(256)) * 4,
        "",
    ]:
        registry.record("clean", text)
    assert registry.findings == []
    registry.check()


def test_the_report_names_where_and_how() -> None:
    registry = Registry()
    registry.plant(RANDOM, partial=True)
    registry.record("operator log", f"x {RANDOM.upper()} y")
    registry.record("event e1", f"{RANDOM[:20]}")
    assert "'CANARY-0123456789abcdef0123456789abcdef' in operator log (as itself)" in registry.findings[0]
    assert "in event e1 (as a piece: 20 of 39 bytes, itself)" in registry.findings[1]
    with pytest.raises(AssertionError, match="2 finding"):
        registry.check()


def test_too_short_a_canary_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Registry().plant("short")


# --- what `collect` looks at ---------------------------------------------------------------------


def cluster_view(canary_at: str) -> dict[str, list[dict[str, Any]]]:
    """One object of each kind; the canary planted at `canary_at` (kind.field)."""
    objects: dict[str, dict[str, Any]] = {
        "events": {"metadata": {"name": "e"}, "message": "m"},
        "pods": {"metadata": {"name": "p"}, "spec": {}, "status": {"message": "m"}},
        "configmaps": {"metadata": {"name": "c"}, "data": {"k": "v"}},
        "secrets": {
            "metadata": {"name": "s", "annotations": {}},
            "data": {"k": base64.b64encode(RANDOM.encode()).decode()},
        },
        "taskruns": {"metadata": {"name": "t"}, "spec": {"note": "user text"}, "status": {"message": "m"}},
    }
    kind, _, where = canary_at.partition(".")
    if kind:
        target = objects[kind]
        if where == "annotation":
            target["metadata"]["annotations"] = {"last-handled-configuration": json.dumps({"data": RANDOM})}
        elif where == "data":
            target["data"] = {"k": RANDOM}
        elif where == "spec":
            target["spec"] = {"value": RANDOM}
        else:
            target["status"] = {"message": RANDOM}
    return {kind: [item] for kind, item in objects.items()}


def collect_with(monkeypatch: pytest.MonkeyPatch, view: dict[str, list[dict[str, Any]]]) -> Registry:
    registry = Registry()
    registry.plant(RANDOM, partial=True)
    monkeypatch.setattr(leaks, "REGISTRY", registry)

    def list_items(_: Any, path: str) -> list[dict[str, Any]]:
        kind = path.rsplit("/", 1)[-1]
        if kind not in view:
            raise leaks.ApiException(status=403, reason="Forbidden")
        return view[kind]

    monkeypatch.setattr(leaks, "list_items", list_items)
    leaks.collect(object(), "ns")  # type: ignore[arg-type]
    return registry


@pytest.mark.parametrize(
    "where",
    [
        "secrets.annotation",
        "configmaps.annotation",
        "configmaps.data",
        "events.status",
        "pods.spec",
        "pods.status",
        "taskruns.status",
        "taskruns.annotation",
    ],
)
def test_collect_sees_what_a_user_sees(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    registry = collect_with(monkeypatch, cluster_view(where))
    assert len(registry.findings) == 1, registry.findings
    assert where.partition(".")[0][:-1] in registry.findings[0]


def test_collect_never_reads_secret_data_nor_a_taskrun_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    view = cluster_view("")  # the Secret's data holds the canary's base64, as a Secret does
    view["secrets"][0]["data"] = {"k": RANDOM}
    view["taskruns"][0]["spec"] = {"value": RANDOM}
    assert collect_with(monkeypatch, view).findings == []


def test_a_listing_that_fails_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    view = cluster_view("")
    del view["configmaps"]  # listing them answers 403
    registry = collect_with(monkeypatch, view)
    assert registry.findings == ["could not check configmaps in ns: ApiException: (403) Reason: Forbidden"]
    with pytest.raises(AssertionError):
        registry.check()


def test_sesame_commands_are_recognised() -> None:
    assert leaks.runs_sesame(["/x/.venv/bin/sesame", "get", "secret"])
    assert leaks.runs_sesame(["python3", "-m", "sesame", "operator", "run"])
    assert leaks.runs_sesame(["/bin/kubectl", "sesame", "get", "secret"])
    assert leaks.runs_sesame("kubectl-sesame get secret")
    assert not leaks.runs_sesame(["/bin/kubectl", "get", "pods"])
