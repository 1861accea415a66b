"""Segment message -> contract event mapping (no services)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ingest.collector.segment import ECOMMERCE_EVENTS, MESSAGE_ID_NAMESPACE, map_message
from lambdalake.contract import EventValidator

RECEIVED = "2026-11-22T10:00:00.000Z"
TS = "2026-11-22T09:59:58.120+00:00"


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"messageId": str(uuid.uuid4()), "userId": "u-1", "timestamp": TS}
    base.update(overrides)
    return base


def mapped(
    msg: object, kind: str | None = "track", batch_context: dict[str, Any] | None = None
) -> dict[str, Any]:
    event, reasons = map_message(msg, kind, RECEIVED, batch_context)
    assert reasons == []
    assert event is not None
    return event


def valid(event: dict[str, Any]) -> bool:
    reasons = EventValidator().validate({**event, "received_at": RECEIVED})
    assert reasons == []
    return True


def test_order_completed_becomes_a_valid_purchase() -> None:
    msg = message(
        event="Order Completed",
        properties={
            "order_id": "o-1",
            "total": 30.0,
            "revenue": 25.0,
            "currency": "USD",
            "products": [
                {"product_id": "p-1", "quantity": 1, "price": 30.0},
                {"id": "p-2", "quantity": 1, "price": 0},
            ],
        },
    )
    event = mapped(msg)
    assert event["event_type"] == "purchase"
    assert event["event_id"] == msg["messageId"]
    assert event["user_id"] == "u-1"
    assert event["ts"] == TS
    assert event["properties"]["amount"] == 30.0
    assert event["properties"]["items"][1]["product_id"] == "p-2"
    assert "products" not in event["properties"]
    assert valid(event)
    assert msg["properties"]["products"][1] == {"id": "p-2", "quantity": 1, "price": 0}  # input untouched


def test_amount_falls_back_to_revenue_then_value() -> None:
    props = {"order_id": "o", "currency": "EUR", "items": [{"product_id": "p", "quantity": 1, "price": 1}]}
    assert (
        mapped(message(event="Order Completed", properties={**props, "revenue": 9}))["properties"]["amount"]
        == 9
    )
    assert (
        mapped(message(event="Order Completed", properties={**props, "value": 7}))["properties"]["amount"]
        == 7
    )
    explicit = mapped(message(event="Order Completed", properties={**props, "amount": 3, "total": 9}))
    assert explicit["properties"]["amount"] == 3


@pytest.mark.parametrize(
    ("name", "properties", "event_type"),
    [
        ("Product Viewed", {"product_id": "p-1", "price": 2}, "product_view"),
        ("Product Added", {"id": "p-1", "quantity": 2, "price": 2}, "add_to_cart"),
        ("Product Removed", {"product_id": "p-1", "quantity": 1}, "remove_from_cart"),
        (
            "Checkout Started",
            {"total": 4, "currency": "EUR", "products": [{"product_id": "p", "quantity": 1, "price": 4}]},
            "checkout_started",
        ),
        ("Products Searched", {"query": "red socks"}, "search"),
    ],
)
def test_ecommerce_spec_names_map_to_built_in_types(
    name: str, properties: dict[str, Any], event_type: str
) -> None:
    event = mapped(message(event=name, properties=properties))
    assert event["event_type"] == event_type
    assert valid(event)
    if event_type == "checkout_started":
        assert event["properties"]["amount"] == 4
        assert event["properties"]["items_count"] == 1
    if event_type == "add_to_cart":
        assert event["properties"]["product_id"] == "p-1"


def test_every_spec_name_is_documented() -> None:
    import ingest.collector.segment as module

    for name, event_type in ECOMMERCE_EVENTS.items():
        assert f'"{name}" -> {event_type}' in (module.__doc__ or "")


def test_other_track_names_stay_custom_types() -> None:
    event = mapped(message(event="Signed Up", properties={"plan": "pro"}))
    assert event["event_type"] == "Signed Up"
    assert event["properties"] == {"plan": "pro"}
    assert valid(event)


def test_missing_required_ecommerce_fields_are_not_invented() -> None:
    event = mapped(message(event="Product Added", properties={"product_id": "p"}))
    reasons = EventValidator().validate(event)
    assert any("quantity" in r for r in reasons)
    assert any("price" in r for r in reasons)


def test_page_takes_url_from_properties_or_context_page() -> None:
    ctx = {"page": {"url": "https://a.example/x", "path": "/x", "title": "X"}}
    event = mapped(message(name="Landing", context=ctx), "page")
    assert event["event_type"] == "page_view"
    assert event["properties"] == {
        "url": "https://a.example/x",
        "path": "/x",
        "title": "X",
        "name": "Landing",
    }
    assert valid(event)
    own = mapped(message(properties={"url": "https://own.example"}, context=ctx), "page")
    assert own["properties"]["url"] == "https://own.example"
    assert not EventValidator().is_valid({**mapped(message(), "page"), "received_at": RECEIVED})


def test_screen_and_identify() -> None:
    screen = mapped(message(name="Cart", properties={"items": 2}), "screen")
    assert (screen["event_type"], screen["properties"]) == ("screen_view", {"items": 2, "name": "Cart"})
    identify = mapped(message(traits={"email": "a@b.example"}), "identify")
    assert (identify["event_type"], identify["properties"]) == (
        "identify",
        {"traits": {"email": "a@b.example"}},
    )
    assert valid(identify)
    assert mapped(message(), "identify")["properties"] == {"traits": {}}


def test_non_uuid_message_id_gets_a_deterministic_uuid5_and_is_kept() -> None:
    first = mapped(message(messageId="abc-123", event="X"))
    again = mapped(message(messageId="abc-123", event="X"))
    assert first["event_id"] == again["event_id"] == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "abc-123"))
    assert first["context"]["message_id"] == "abc-123"
    numeric = mapped(message(messageId=42, event="X"))
    assert numeric["event_id"] == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "42"))
    assert valid(first)


def test_missing_message_id_gets_a_uuid4_and_bad_ones_a_reason() -> None:
    msg = message(event="X")
    del msg["messageId"]
    event = mapped(msg)
    assert uuid.UUID(event["event_id"]).version == 4
    assert "message_id" not in event["context"]
    for bad in (True, {"a": 1}, ""):
        event, reasons = map_message(message(messageId=bad, event="X"), "track", RECEIVED)
        assert event is None
        assert reasons[0].startswith("messageId:")


def test_batch_items_need_a_supported_type() -> None:
    assert mapped(message(type="track", event="X"), None)["event_type"] == "X"
    for item, fragment in (
        (message(type="alias"), "'alias' is not supported"),
        (message(), "needs a type"),
        ([1], "must be a JSON object"),
    ):
        event, reasons = map_message(item, None, RECEIVED)
        assert event is None
        assert fragment in reasons[0]


def test_track_without_an_event_name_is_rejected() -> None:
    event, reasons = map_message(message(event=""), "track", RECEIVED)
    assert event is None
    assert reasons == ["event: a track call needs an event name (a non-empty string)"]


def test_context_is_renamed_merged_with_batch_context_and_keeps_integrations() -> None:
    msg = message(
        event="X",
        context={"userAgent": "UA", "device": {"type": "ios", "model": "iPhone"}, "ip": "1.2.3.4"},
        integrations={"All": False},
    )
    event = mapped(msg, "track", {"ip": "9.9.9.9", "locale": "de-DE"})
    assert event["context"] == {
        "ip": "1.2.3.4",
        "locale": "de-DE",
        "user_agent": "UA",
        "device": "ios",
        "device_info": {"type": "ios", "model": "iPhone"},
        "integrations": {"All": False},
    }
    assert valid(event)


def test_ids_timestamps_and_missing_identity() -> None:
    msg = {
        "messageId": str(uuid.uuid4()),
        "userId": 123,
        "anonymousId": "a",
        "event": "X",
        "originalTimestamp": TS,
    }
    event = mapped(msg)
    assert (event["user_id"], event["anonymous_id"], event["ts"]) == ("123", "a", TS)
    no_time = mapped({"messageId": str(uuid.uuid4()), "anonymousId": "a", "event": "X"})
    assert no_time["ts"] == RECEIVED
    anonymous = mapped({"messageId": str(uuid.uuid4()), "event": "X"})
    assert "event: user_id or anonymous_id is required" in EventValidator().validate(anonymous)
