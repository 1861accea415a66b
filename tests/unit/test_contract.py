"""The event contract: every built-in type accepts its valid form and lists every reason otherwise."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdalake.contract import (
    BUILT_IN_TYPES,
    EventValidator,
    is_datetime,
    partition_key,
    resolved_schema,
    schema_versions,
    validate_event,
)

EVENT_ID = "3f1b2c4d-1111-4222-8333-444455556666"
BASE: dict[str, Any] = {
    "event_id": EVENT_ID,
    "user_id": "u0000001",
    "anonymous_id": "a-1",
    "session_id": "s-1",
    "ts": "2026-01-01T10:00:00.123Z",
    "context": {"ip": "192.0.2.10", "country": "US", "device": "mobile"},
}
PROPERTIES: dict[str, dict[str, Any]] = {
    "page_view": {"url": "https://shop.example.com/", "path": "/", "referrer": None, "title": "Shop"},
    "product_view": {"product_id": "P00001", "category": "books", "name": "Atlas", "price": 12.5},
    "search": {"query": "gift", "results_count": 3},
    "add_to_cart": {"product_id": "P00001", "quantity": 2, "price": 12.5, "cart_id": "c1"},
    "remove_from_cart": {"product_id": "P00001", "quantity": 1},
    "checkout_started": {"cart_id": "c1", "amount": 25.0, "currency": "USD", "items_count": 2},
    "purchase": {
        "order_id": "o-1",
        "amount": 25.0,
        "currency": "USD",
        "promo_code": None,
        "items": [{"product_id": "P00001", "quantity": 2, "price": 12.5}],
    },
    "identify": {"traits": {"plan": "plus"}},
}

# (event type, change to the valid event, reasons expected — each a substring of one reason)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("page_view", {"properties": {}}, ["properties: 'url' is a required property"]),
    ("page_view", {"properties": {"url": ""}}, ["properties.url:"]),
    ("product_view", {"properties": {"price": -1}}, ["'product_id' is a required", "properties.price: -1"]),
    ("search", {"properties": {"query": "x", "results_count": 1.5}}, ["properties.results_count: 1.5"]),
    (
        "add_to_cart",
        {"properties": {"product_id": "p", "quantity": 0}},
        ["'price' is a required", "quantity: 0"],
    ),
    ("remove_from_cart", {"properties": {"quantity": "1"}}, ["'product_id' is a required", "quantity: '1'"]),
    ("checkout_started", {"properties": {"amount": 1, "currency": "usd"}}, ["properties.currency: 'usd'"]),
    (
        "purchase",
        {"properties": {"order_id": "o", "amount": -1, "currency": "USD", "items": [{"product_id": "p"}]}},
        ["properties.amount: -1", "items[0]: 'quantity' is a required", "items[0]: 'price' is a required"],
    ),
    (
        "purchase",
        {"properties": {"order_id": "o", "amount": 1, "currency": "USD", "items": []}},
        ["items: []"],
    ),
    ("identify", {"user_id": None}, ["user_id: None is not of type 'string'"]),
    ("identify", {"properties": {}}, ["'traits' is a required property"]),
]


def valid_event(event_type: str, /, **overrides: Any) -> dict[str, Any]:
    event = copy.deepcopy(BASE) | {
        "event_type": event_type,
        "properties": copy.deepcopy(PROPERTIES[event_type]),
    }
    event.update(overrides)
    return event


def test_every_built_in_type_has_a_schema_and_a_fixture() -> None:
    assert set(BUILT_IN_TYPES) <= set(schema_versions())
    assert set(BUILT_IN_TYPES) == set(PROPERTIES)


@pytest.mark.parametrize("event_type", BUILT_IN_TYPES)
def test_valid_event_of_each_type(event_type: str) -> None:
    assert validate_event(valid_event(event_type)) == []


@pytest.mark.parametrize(("event_type", "change", "expected"), INVALID)
def test_invalid_event_lists_every_reason(
    event_type: str, change: dict[str, Any], expected: list[str]
) -> None:
    reasons = validate_event(valid_event(event_type, **change))
    assert len(reasons) == len(expected), reasons
    for fragment in expected:
        assert any(fragment in reason for reason in reasons), (fragment, reasons)


def test_envelope_errors_are_all_reported_at_once() -> None:
    event = valid_event(
        "page_view", event_id="nope", ts="2026-02-30T10:00:00Z", user_id=None, anonymous_id=None
    )
    event["colour"] = "red"
    reasons = validate_event(event)
    assert reasons == [
        "event: unknown field(s) colour (allowed: event_id, event_type, schema_version, user_id, anonymous_id, "
        "session_id, ts, received_at, properties, context)",
        "event: user_id or anonymous_id is required",
        "event_id: 'nope' is not a valid uuid",
        "ts: '2026-02-30T10:00:00Z' is not a valid date-time",
    ]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-01-01T10:00:00Z", True),
        ("2026-01-01T10:00:00.123456789+02:00", True),
        ("2026-01-01 10:00:00z", True),
        ("2026-01-01T10:00:00", False),  # no offset: ambiguous event time
        ("2026-13-01T10:00:00Z", False),
        ("2026-02-29T10:00:00Z", False),  # not a leap year
        ("yesterday", False),
    ],
)
def test_timestamps_need_an_offset_and_a_real_date(value: str, valid: bool) -> None:
    assert is_datetime(value) is valid


def test_a_reason_given_by_envelope_and_type_schema_is_listed_once() -> None:
    assert validate_event(valid_event("purchase", properties="oops")) == [
        "properties: 'oops' is not of type 'object'"
    ]


def test_custom_event_types_need_only_the_envelope() -> None:
    custom = valid_event("page_view", event_type="Video Played", properties={"video_id": 7, "anything": [1]})
    assert validate_event(custom) == []
    assert validate_event(custom | {"properties": []}) == ["properties: [] is not of type 'object'"]


def test_strict_mode_rejects_unlisted_types_with_the_allowed_list() -> None:
    custom = valid_event("page_view", event_type="Video Played", properties={})
    reasons = validate_event(custom, strict_types=["page_view", "purchase"])
    assert reasons == ["event_type: 'Video Played' is not allowed (strict mode accepts: page_view, purchase)"]
    assert validate_event(valid_event("purchase"), strict_types=["page_view", "purchase"]) == []


def test_unknown_schema_version_is_a_reason() -> None:
    reasons = validate_event(valid_event("purchase", schema_version=9))
    assert reasons == ["schema_version: purchase has no version 9 (known: [1])"]
    assert validate_event(valid_event("purchase", schema_version=1)) == []


@pytest.mark.parametrize("payload", [[], "x", 3, None])
def test_non_objects_are_rejected_with_their_type(payload: object) -> None:
    assert validate_event(payload) == [f"event: must be a JSON object, got {type(payload).__name__}"]


def test_partition_key_prefers_user_then_anonymous_id() -> None:
    assert partition_key(valid_event("search")) == "u0000001"
    assert partition_key(valid_event("search", user_id=None)) == "a-1"


def test_type_schemas_inline_the_envelope() -> None:
    schema = resolved_schema("purchase", 1)
    assert "$ref" not in str(schema)
    assert schema["allOf"][0]["required"] == ["event_id", "event_type", "ts", "properties"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.sampled_from([*BUILT_IN_TYPES, "Custom Thing"]),
    field=st.sampled_from(
        ["event_id", "ts", "user_id", "anonymous_id", "session_id", "properties", "context"]
    ),
    value=json_values,
)
def test_fast_and_full_validators_agree(event_type: str, field: str, value: object) -> None:
    """The compiled fast path and the full error listing share one schema: valid iff no reasons."""
    base = valid_event("page_view" if event_type == "Custom Thing" else event_type)
    base["event_type"] = event_type
    base[field] = value
    validator = EventValidator()
    reasons = validator.validate(base)
    assert "event: rejected by the compiled validator" not in reasons
    from lambdalake.contract import _slow

    name, version, _ = validator.schema_for(base)
    assert bool(reasons) == bool(list(_slow(name, version).iter_errors(base)))
