"""The leak canary (tests/support/leaks.py) finds a planted value in every spelling it may take."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.leaks import Registry, needles


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz", b"prefix-of-some-length:"])
def test_base64_inside_a_longer_value_is_found(prefix: bytes) -> None:
    registry = Registry()
    registry.plant("CANARY-0123456789abcdef0123456789abcdef")
    blob = base64.b64encode(prefix + b"CANARY-0123456789abcdef0123456789abcdef" + b"-suffix").decode()
    registry.record("a Secret-like blob", json.dumps({"data": {"k": blob}}))
    assert len(registry.findings) == 1
    with pytest.raises(AssertionError, match="1 secret value leak"):
        registry.check()


def test_plain_and_binary_values_are_found_and_clean_text_passes() -> None:
    registry = Registry()
    registry.plant("CANARY-plain-value-1234567890")
    registry.plant(b"\x00\xffbinary\x01canary\x02", label="binary")
    registry.record("log", "nothing to see here")
    assert registry.findings == []
    registry.record("log", "oops: CANARY-plain-value-1234567890 in a log line")
    registry.record("event", base64.b64encode(b"\x00\xffbinary\x01canary\x02").decode())
    assert len(registry.findings) == 2
    assert "in log (as itself)" in registry.findings[0]
    assert "binary in event (as base64)" in registry.findings[1]


def test_needles_are_long_enough_to_never_match_by_chance() -> None:
    assert all(len(n) >= 16 for n in needles("CANARY-0123456789abcdef0123456789abcdef"))
