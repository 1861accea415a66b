"""Property-based fuzzing of request bodies against the real collector process and kinesalite.

Whatever is sent: the answer is 2xx or 4xx, the process stays up, accepted + rejected equals what
was sent, the stream holds exactly the accepted events and the DLQ exactly the rejected ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.collector.process import CollectorProcess
from lambdalake.settings import Settings
from tests.integration.test_collector_support import (
    AUTH,
    collector_settings,
    read_dead_letters,
    read_events,
    running_collector,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 150

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
# Identifiers: mostly plausible, sometimes past the contract's 256 characters (or Kinesis's key limit).
ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=120, max_size=300
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
timestamps = st.sampled_from(
    ["2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123+01:00", "2026-02-30T00:00:00Z", "now", ""]
)


VALID_PROPERTIES: dict[str, dict[str, Any]] = {
    "page_view": {"url": "https://shop.example/"},
    "product_view": {"product_id": "p-1"},
    "search": {"query": "socks"},
    "add_to_cart": {"product_id": "p-1", "quantity": 1, "price": 2.5},
    "remove_from_cart": {"product_id": "p-1", "quantity": 1},
    "checkout_started": {"amount": 5.0, "currency": "EUR"},
    "purchase": {
        "order_id": "o-1",
        "amount": 5.0,
        "currency": "EUR",
        "items": [{"product_id": "p-1", "quantity": 2, "price": 2.5}],
    },
    "identify": {"traits": {"plan": "pro"}},
    "signup": {"anything": [1, 2]},
}


@st.composite
def native_events(draw: st.DrawFn) -> Any:
    """Valid events of every type, the same slightly broken, and any JSON value."""
    kind = draw(st.sampled_from(["valid", "mutated", "valid", "any"]))
    if kind == "any":
        return draw(json_values)
    event_type = draw(st.sampled_from(sorted(VALID_PROPERTIES)))
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "user_id": draw(ids),
        "ts": "2026-11-22T10:00:00.123+01:00",
        "properties": dict(VALID_PROPERTIES[event_type]),
    }
    if draw(st.booleans()):
        event["anonymous_id"] = draw(ids)
    if draw(st.booleans()):
        event["context"] = {"ip": draw(text), "page": draw(st.dictionaries(text, json_values, max_size=3))}
    if kind == "valid":
        return event
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(["drop", "replace", "add", "bad_id", "bad_ts", "bad_type"]))
        key = draw(st.sampled_from(sorted(event)))
        if mutation == "drop":
            event.pop(key, None)
        elif mutation == "replace":
            event[key] = draw(json_values)
        elif mutation == "add":
            event[draw(text)] = draw(json_values)
        elif mutation == "bad_id":
            event["event_id"] = draw(st.sampled_from(["not-a-uuid", None, 5]))
        elif mutation == "bad_ts":
            event["ts"] = draw(timestamps)
        else:
            event["event_type"] = draw(st.sampled_from(["", "envelope", "x" * 200, "purchase"]))
    return event


@st.composite
def segment_messages(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    message: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "page", "screen", "identify", "alias", "group", None])),
        "messageId": draw(st.sampled_from([str(uuid.uuid4()), "m-1", 12, None, True])),
        "timestamp": draw(timestamps),
        "event": draw(st.sampled_from(["Order Completed", "Product Viewed", "Signed Up", "", None])),
        "properties": draw(st.none() | st.dictionaries(text, json_values, max_size=3)),
        "traits": draw(st.none() | st.dictionaries(text, json_values, max_size=3)),
        "context": draw(st.none() | st.dictionaries(text, json_values, max_size=3) | json_values),
    }
    identity = draw(st.sampled_from(["userId", "anonymousId", "none"]))
    if identity != "none":
        message[identity] = draw(ids | st.integers(0, 10**6))
    return {k: v for k, v in message.items() if v is not None or draw(st.booleans())}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers): well-formed bodies of every shape, and garbage."""
    path = draw(st.sampled_from(["/v1/events"] * 4 + ["/v1/batch", "/v1/track", "/v1/identify"]))
    shape = draw(st.sampled_from(["items", "items", "items", "items", "json", "bytes"]))
    if shape == "bytes":
        body = draw(st.binary(max_size=200))
    elif shape == "json":
        body = orjson.dumps(draw(json_values))
    elif path == "/v1/events":
        items = draw(st.lists(native_events(), max_size=8))
        wrap = draw(st.sampled_from(["array", "envelope", "single"]))
        document: Any = (
            items if wrap == "array" else {"events": items} if wrap == "envelope" or not items else items[0]
        )
        body = orjson.dumps(document)
    elif path == "/v1/batch":
        body = orjson.dumps(
            {"batch": draw(st.lists(segment_messages(), max_size=8)), "context": draw(json_values)}
        )
    else:
        body = orjson.dumps(draw(segment_messages()))
    content_type = draw(
        st.sampled_from(["application/json"] * 6 + ["text/plain;charset=UTF-8", "text/html", ""])
    )
    headers = {"Content-Type": content_type}
    if draw(st.sampled_from([True] * 9 + [False])):
        headers.update(AUTH)
    return path, body, headers


def sent_items(path: str, body: bytes) -> list[Any] | None:
    """The items the collector must account for, or None when the body is refused as a whole."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if path == "/v1/events":
        if isinstance(document, list):
            return document
        if isinstance(document, dict):
            return document.get("events", [document])
        return None
    if path == "/v1/batch":
        return document.get("batch") if isinstance(document, dict) else None
    return [document] if isinstance(document, dict) else None


@pytest.fixture(scope="module")
def collector(engines: Settings) -> Iterator[CollectorProcess]:
    with running_collector(collector_settings(engines)) as process:
        yield process


def test_fuzzed_bodies_never_5xx_and_every_event_is_accounted_for(collector: CollectorProcess) -> None:
    accepted_total = 0
    expected_letters: dict[tuple[str, int], Any] = {}
    statuses: dict[int, int] = {}

    with httpx.Client(base_url=collector.url, timeout=30.0) as client:

        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(request=requests())
        def send(request: tuple[str, bytes, dict[str, str]]) -> None:
            nonlocal accepted_total
            path, body, headers = request
            response = client.post(path, content=body, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert 200 <= response.status_code < 500, (response.status_code, response.text)
            assert collector.alive()
            if response.status_code != 200:
                assert response.json()["message"]
                return
            items = sent_items(path, body)
            assert items is not None
            result = response.json()
            assert result["accepted"] + result["rejected"] == len(items)
            assert len(result["errors"]) == result["rejected"]
            indexes = [error["index"] for error in result["errors"]]
            assert indexes == sorted(set(indexes))
            assert all(
                0 <= i < len(items) and error["reasons"]
                for i, error in zip(indexes, result["errors"], strict=True)
            )
            accepted_total += result["accepted"]
            for i in indexes:
                expected_letters[(response.headers["x-request-id"], i)] = items[i]

        send()
        assert client.get("/healthz").status_code == 200

    assert statuses.get(200, 0) > MAX_EXAMPLES // 4, statuses  # the generator must reach the pipeline
    assert accepted_total > MAX_EXAMPLES // 10  # and valid events must get through
    assert len(read_events(collector.settings)) == accepted_total
    letters = {(d["request_id"], d["index"]): d["payload"] for d in read_dead_letters(collector.settings)}
    assert letters == expected_letters
