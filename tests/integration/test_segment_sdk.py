"""The official Segment SDK (segment-analytics-python, unchanged) against the real collector: its
events are found on the stream, mapped onto the contract."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from segment.analytics import Client

from ingest.collector.process import CollectorProcess
from ingest.collector.segment import MESSAGE_ID_NAMESPACE
from lambdalake.settings import Settings
from tests.integration.test_collector_support import (
    WRITE_KEY,
    collector_settings,
    read_dead_letters,
    read_events,
    running_collector,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def collector(engines: Settings) -> Iterator[CollectorProcess]:
    with running_collector(collector_settings(engines)) as process:
        yield process


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_sdk_track_page_identify_reach_the_stream(collector: CollectorProcess, gzip: bool) -> None:
    errors: list[Exception] = []
    client = Client(
        write_key=WRITE_KEY,
        host=collector.url,
        gzip=gzip,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
        upload_interval=0.1,
    )
    user = f"sdk-user-{uuid.uuid4().hex[:8]}"
    when = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
    order_message_id = str(uuid.uuid4())
    client.track(
        user_id=user,
        event="Order Completed",
        timestamp=when,
        message_id=order_message_id,
        properties={
            "order_id": "o-1",
            "total": 42.5,
            "revenue": 40.0,
            "currency": "EUR",
            "products": [{"product_id": "p-1", "quantity": 2, "price": 21.25, "category": "books"}],
        },
        context={"ip": "203.0.113.9"},
    )
    client.track(
        user_id=user, event="Signed Up", timestamp=when, message_id="signup-1", properties={"plan": "pro"}
    )
    client.page(user_id=user, name="Home", properties={"url": "https://shop.example/", "title": "Shop"})
    client.identify(user_id=user, traits={"email": "x@example.com", "plan": "pro"})
    client.track(user_id=user, event="Product Added", properties={"product_id": "p-2"})  # no quantity/price
    client.flush()
    client.join()
    assert errors == []

    mine = [e for e in read_events(collector.settings) if e.get("user_id") == user]
    by_type = {e["event_type"]: e for e in mine}
    assert sorted(by_type) == ["Signed Up", "identify", "page_view", "purchase"]

    purchase = by_type["purchase"]
    assert purchase["event_id"] == order_message_id
    assert datetime.fromisoformat(purchase["ts"]) == when
    assert purchase["properties"]["amount"] == 42.5
    assert purchase["properties"]["items"] == [
        {"product_id": "p-1", "quantity": 2, "price": 21.25, "category": "books"}
    ]
    assert purchase["context"]["ip"] == "203.0.113.9"
    assert purchase["context"]["library"]["name"] == "analytics-python"
    assert purchase["received_at"].endswith("Z")

    custom = by_type["Signed Up"]
    assert custom["properties"] == {"plan": "pro"}
    assert custom["event_id"] == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "signup-1"))
    assert custom["context"]["message_id"] == "signup-1"

    assert by_type["page_view"]["properties"] == {
        "url": "https://shop.example/",
        "title": "Shop",
        "name": "Home",
    }
    assert by_type["identify"]["properties"] == {"traits": {"email": "x@example.com", "plan": "pro"}}

    [rejected] = [d for d in read_dead_letters(collector.settings) if d["payload"].get("userId") == user]
    assert rejected["route"] == "/v1/batch"
    assert rejected["payload"]["event"] == "Product Added"
    assert any("quantity" in reason for reason in rejected["reasons"])


def test_resending_a_segment_message_keeps_its_event_id(collector: CollectorProcess) -> None:
    user = f"sdk-user-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        client = Client(write_key=WRITE_KEY, host=collector.url, sync_mode=True, max_retries=0)
        client.track(user_id=user, event="Clicked", message_id="not-a-uuid-42", properties={})
    ids = [e["event_id"] for e in read_events(collector.settings) if e.get("user_id") == user]
    assert len(ids) == 2
    assert ids[0] == ids[1] == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "not-a-uuid-42"))


def test_segment_sdk_with_a_wrong_write_key_gets_401(collector: CollectorProcess) -> None:
    errors: list[Exception] = []
    client = Client(
        write_key="wrong",
        host=collector.url,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    client.track(user_id="nobody", event="Clicked")
    client.flush()
    client.join()
    assert len(errors) == 1
    assert getattr(errors[0], "status", None) == 401
