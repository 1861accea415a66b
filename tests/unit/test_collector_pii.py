"""PII masking: IP truncation and keyed hashing of named fields (no services)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ingest.collector.pii import PiiMasker, truncate_ip


@pytest.mark.parametrize(
    ("ip", "masked"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.3", "10.1.2.0"),
        ("2001:db8:abcd:1234:5678::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("fe80::1%eth0", "fe80::"),
        ("203.0.113.77, 2001:db8::1", "203.0.113.0, 2001:db8::"),
        ("not an ip", None),
        ("1.2.3.4, bogus", None),
        ("", None),
    ],
)
def test_truncate_ip(ip: str, masked: str | None) -> None:
    assert truncate_ip(ip) == masked


def test_hashes_named_fields_everywhere_and_masks_ip_without_touching_the_input() -> None:
    masker = PiiMasker(True, ["email", "phone"], "k")
    digest = hmac.new(b"k", b"a@b.example", hashlib.sha256).hexdigest()
    event = {
        "event_type": "identify",
        "properties": {"email": "a@b.example", "url": "u", "traits": {"email": "a@b.example", "phone": None}},
        "traits": {"phone": 5551234},
        "context": {"ip": "192.0.2.55", "traits": {"email": "a@b.example"}, "user_agent": "UA"},
    }
    original = repr(event)
    masked = masker.mask(event)
    assert repr(event) == original
    assert masked["properties"] == {"email": digest, "url": "u", "traits": {"email": digest, "phone": None}}
    assert masked["traits"] == {"phone": masker.hash_value(5551234)}
    assert masker.hash_value(5551234) == hmac.new(b"k", b"5551234", hashlib.sha256).hexdigest()
    assert masked["context"] == {"ip": "192.0.2.0", "traits": {"email": digest}, "user_agent": "UA"}


def test_unparseable_ip_is_dropped_and_odd_shapes_pass_through() -> None:
    masker = PiiMasker(True, ["email"], "k")
    assert masker.mask({"context": {"ip": "localhost", "x": 1}}) == {"context": {"x": 1}}
    odd = {"context": "not an object", "properties": [1, 2], "traits": None}
    assert masker.mask(odd) == odd
    assert masker.mask({"context": {"ip": 42}}) == {"context": {"ip": 42}}  # the contract rejects it


def test_inactive_masker_returns_the_same_object_and_a_key_is_required() -> None:
    event = {"context": {"ip": "1.2.3.4"}}
    assert PiiMasker(False, [], None).mask(event) is event
    assert PiiMasker(True, [], None).mask(event) == {"context": {"ip": "1.2.3.0"}}
    with pytest.raises(ValueError, match="key"):
        PiiMasker(False, ["email"], None)


def test_different_keys_give_different_hashes() -> None:
    assert PiiMasker(False, ["e"], "k1").hash_value("x") != PiiMasker(False, ["e"], "k2").hash_value("x")
