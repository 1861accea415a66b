"""The collector's pipeline: request shapes, stamping, records, DLQ letters (no services: the noop bus)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
import pytest

from ingest.collector.buses import NoopBus
from ingest.collector.metrics import reason_class
from ingest.collector.pipeline import (
    MAX_REASON_CHARS,
    Pipeline,
    RequestError,
    request_items,
    stream_partition_key,
)
from lambdalake.settings import Settings
from lambdalake.stream.kinesis import MAX_BYTES_PER_RECORD

RECEIVED = "2026-11-22T10:00:00.000Z"


def pipeline(**overrides: Any) -> Pipeline:
    return Pipeline(Settings(_env_file=None, collector_bus="noop", **overrides), NoopBus())


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "search",
        "user_id": "u-1",
        "ts": "2026-11-22T09:00:00Z",
        "properties": {"query": "socks"},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("document", "count"),
    [([{}, {}], 2), ({"events": [1, 2, 3]}, 3), ({"event_type": "x"}, 1), ([], 0)],
)
def test_native_shapes(document: Any, count: int) -> None:
    items, context = request_items("native", document, 500)
    assert len(items) == count
    assert context is None


@pytest.mark.parametrize(
    ("kind", "document", "status"),
    [
        ("native", 5, 400),
        ("native", "x", 400),
        ("native", {"events": {}}, 400),
        ("native", [{}] * 11, 413),
        ("batch", [{}], 400),
        ("batch", {"batch": "x"}, 400),
        ("batch", {"batch": [{}] * 11}, 413),
        ("track", [{}], 400),
    ],
)
def test_refused_shapes(kind: Any, document: Any, status: int) -> None:
    with pytest.raises(RequestError) as caught:
        request_items(kind, document, 10)
    assert caught.value.status == status


def test_batch_context_is_returned() -> None:
    items, context = request_items("batch", {"batch": [{}], "context": {"ip": "1.2.3.4"}}, 10)
    assert (items, context) == ([{}], {"ip": "1.2.3.4"})


def test_accepted_events_are_stamped_and_serialised_exactly() -> None:
    sent = event(received_at="1999-01-01T00:00:00Z")
    no_id = event()
    del no_id["event_id"]
    outcome = pipeline().process("/v1/events", "native", [sent, no_id], RECEIVED)
    assert outcome.body() == {"accepted": 2, "rejected": 0, "errors": []}
    first, second = (orjson.loads(r.data) for r in outcome.records)
    assert first == {**sent, "received_at": RECEIVED}  # the collector's clock wins
    assert uuid.UUID(second["event_id"]).version == 4
    assert [r.partition_key for r in outcome.records] == ["u-1", "u-1"]
    assert sent["received_at"] == "1999-01-01T00:00:00Z"  # what the client sent is not modified


def test_rejected_events_become_dead_letters_with_the_original_payload() -> None:
    bad = {"event_type": "search", "ts": "x"}
    outcome = pipeline().process("/v1/events", "native", [event(), bad, None], RECEIVED)
    assert (outcome.accepted, outcome.rejected) == (1, 2)
    assert [e["index"] for e in outcome.errors] == [1, 2]
    letters = [orjson.loads(r.data) for r in outcome.dead_letters]
    assert [letter["payload"] for letter in letters] == [bad, None]
    assert letters[0]["reasons"] == outcome.errors[0]["reasons"]
    assert {letter["source"] for letter in letters} == {"collector"}
    assert {letter["received_at"] for letter in letters} == {RECEIVED}
    assert {r.partition_key for r in outcome.dead_letters} == {outcome.request_id}


def test_reasons_are_capped_and_shortened() -> None:
    many = pipeline(collector_max_reasons=3)
    bad = {f"extra{i}": "x" * 1000 for i in range(10)} | {"ts": "y" * 1000}
    [error] = many.process("/v1/events", "native", [bad], RECEIVED).errors
    assert len(error["reasons"]) == 3
    assert error["reasons"][-1].startswith("… and ")
    assert all(len(r) <= MAX_REASON_CHARS for r in error["reasons"])


def test_strict_mode_and_pii_apply() -> None:
    strict = pipeline(strict_event_types="search", collector_pii_mask_ip=True)
    outcome = strict.process(
        "/v1/events",
        "native",
        [event(context={"ip": "203.0.113.9"}), event(event_type="signup", properties={})],
        RECEIVED,
    )
    assert orjson.loads(outcome.records[0].data)["context"]["ip"] == "203.0.113.0"
    assert "strict mode" in outcome.errors[0]["reasons"][0]
    assert reason_class(outcome.errors[0]["reasons"][0]) == "type_not_allowed"


def test_segment_items_are_mapped_then_validated() -> None:
    messages = [
        {"type": "track", "event": "Products Searched", "userId": "u", "properties": {"query": "q"}},
        {"type": "group", "groupId": "g"},
    ]
    outcome = pipeline().process("/v1/batch", "batch", messages, RECEIVED, {"locale": "en-GB"})
    assert (outcome.accepted, outcome.rejected) == (1, 1)
    written = orjson.loads(outcome.records[0].data)
    assert (written["event_type"], written["context"], written["received_at"]) == (
        "search",
        {"locale": "en-GB"},
        RECEIVED,
    )
    assert orjson.loads(outcome.dead_letters[0].data)["payload"] == messages[1]
    assert reason_class(outcome.errors[0]["reasons"][0]) == "segment_message"


def test_partition_keys_too_long_for_kinesis_are_hashed() -> None:
    assert stream_partition_key({"user_id": "a" * 256}) == "a" * 256
    wide = "😀" * 200  # 200 code points (valid for the contract), 400 UTF-16 units (too long for Kinesis)
    assert stream_partition_key({"user_id": wide}) == hashlib.sha256(wide.encode()).hexdigest()
    assert stream_partition_key({"anonymous_id": "x"}) == "x"


def test_an_event_too_large_for_a_record_is_rejected_and_its_letter_truncated() -> None:
    huge = event(properties={"query": "q", "pad": '"' * (MAX_BYTES_PER_RECORD // 2 + 10)})
    outcome = pipeline().process("/v1/events", "native", [huge], RECEIVED)
    assert outcome.accepted == 0
    assert "too large for the stream" in outcome.errors[0]["reasons"][0]
    [record] = outcome.dead_letters
    assert len(record.data) + len(record.partition_key) <= MAX_BYTES_PER_RECORD
    letter = orjson.loads(record.data)
    assert letter["payload"] is None
    assert letter["payload_truncated"] is True
    assert letter["payload_text"].startswith('{"event_id":"' + huge["event_id"])


def test_ingest_writes_through_the_bus() -> None:
    outcome = pipeline().ingest("/v1/events", "native", [event(), {}])
    assert outcome.body()["accepted"] == 1
    assert outcome.records[0].data.count(b"received_at") == 1


def test_a_write_key_in_a_segment_message_is_not_kept_in_the_dlq() -> None:
    message = {"type": "alias", "userId": "u", "writeKey": "secret"}
    outcome = pipeline().process("/v1/batch", "batch", [message], RECEIVED)
    assert orjson.loads(outcome.dead_letters[0].data)["payload"] == {"type": "alias", "userId": "u"}
    assert message["writeKey"] == "secret"


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("event_type: 'envelope' is reserved", "constraint"),
        ("type: 'alias' is not supported (supported: track)", "segment_message"),
        ("messageId: must be a string, got bool", "segment_message"),
        ("event: 'ts' is a required property", "missing_field"),
        ("ts: 'now' is not a valid date-time", "bad_format"),
        ("event: user_id or anonymous_id is required", "missing_identity"),
        ("properties.quantity: 'x' is not of type 'integer'", "wrong_type"),
    ],
)
def test_reason_classes(reason: str, label: str) -> None:
    assert reason_class(reason) == label
