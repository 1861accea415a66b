"""Rows from records, Parquet files, size cuts, and replacement of a failed attempt's orphans.

The lake here is a temporary local directory (a lake URI like any other); no services."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from ingest.delivery.layout import DataFileName
from ingest.delivery.processor import letter_row
from ingest.delivery.schema import (
    RAW_SCHEMA,
    REPLAY_MARK,
    ErrorRow,
    RawRow,
    encode_parquet,
    event_from_row,
    event_row,
)
from ingest.delivery.writer import PartitionWriter, cut
from lambdalake import lake
from lambdalake.contract import EventValidator
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from tests.conftest import make_settings

SHARD = "shardId-000000000001"
ARRIVAL = datetime(2026, 1, 1, 0, 10, tzinfo=UTC).timestamp()
VALIDATOR = EventValidator()


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": "u1",
        "session_id": "s1",
        "ts": "2026-01-01T00:05:00.123456Z",
        "received_at": "2026-01-01T00:05:01Z",
        "properties": {"url": "https://shop.example/", "path": "/"},
        "context": {"country": "GB", "new_field_nobody_declared": [1, 2]},
    }
    base.update(overrides)
    return base


def record(data: object, seq: int, arrival: float = ARRIVAL) -> StreamRecord:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return StreamRecord(SHARD, str(seq), "u1", raw, arrival)


def raw_rows(events: list[dict[str, object]], first_seq: int = 1) -> list[RawRow]:
    rows = [event_row(record(e, first_seq + i), VALIDATOR) for i, e in enumerate(events)]
    assert all(isinstance(r, RawRow) for r in rows)
    return rows  # type: ignore[return-value]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, delivery_buffer_mib=0.001)  # ~1 KiB files: several per flush


def test_a_valid_event_becomes_a_typed_row_with_json_text_columns() -> None:
    e = event()
    row = event_row(record(e, 42), VALIDATOR)
    assert isinstance(row, RawRow)
    values = dict(zip(RAW_SCHEMA.names, row.values, strict=True))
    assert values["ts"] == int(datetime(2026, 1, 1, 0, 5, 0, 123000, tzinfo=UTC).timestamp() * 1000)
    assert orjson.loads(values["context"])["new_field_nobody_declared"] == [1, 2]
    assert (values["shard_id"], values["sequence_number"]) == (SHARD, "42")
    table = pq.read_table(io.BytesIO(encode_parquet([row.values], RAW_SCHEMA, "zstd")))
    assert table.schema.field("ts").type == RAW_SCHEMA.field("ts").type
    assert table["ts"][0].as_py() == datetime(2026, 1, 1, 0, 5, 0, 123000, tzinfo=UTC)
    back = event_from_row(table.to_pylist()[0])
    assert back["event_id"] == e["event_id"]
    assert back["properties"] == e["properties"]
    assert back["ts"] == "2026-01-01T00:05:00.123Z"  # the lake keeps milliseconds


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"event_id": "trunc', "not JSON"),
        (b"[1, 2]", "JSON object"),
        (event(ts="yesterday"), "ts"),
        (event(ts="2026-01-01T00:05:00"), "no UTC offset"),
        (event(event_id="not-a-uuid"), "event_id"),
        (event(user_id=None), "user_id or anonymous_id"),
        (event(properties="oops"), "properties"),
        (event(session_id=7), "session_id"),
        (event(schema_version=True), "schema_version"),
        (event(received_at="soon"), "received_at"),
    ],
)
@pytest.mark.parametrize("validator", [None, VALIDATOR], ids=["columns", "contract"])
def test_an_invalid_record_becomes_an_error_row_with_reason_and_payload(
    data: object, reason: str, validator: EventValidator | None
) -> None:
    row = event_row(record(data, 7), validator)
    assert isinstance(row, ErrorRow)
    assert row.source == "delivery"
    reasons, payload = orjson.loads(row.values[1]), row.values[2]
    assert any(reason in r for r in reasons)
    assert payload.encode() == (data if isinstance(data, bytes) else orjson.dumps(data))


def test_the_full_contract_is_checked_only_when_asked() -> None:
    negative = event(event_type="purchase", properties={"amount": -5, "currency": "usd"})
    assert isinstance(event_row(record(negative, 1), None), RawRow)  # well-formed columns
    row = event_row(record(negative, 1), VALIDATOR)
    assert isinstance(row, ErrorRow)
    assert "amount" in row.values[1]


def test_events_reinjected_from_the_lake_are_skipped() -> None:
    replayed = event(context={REPLAY_MARK: {"from": "lake", "shard_id": SHARD, "sequence_number": "1"}})
    assert event_row(record(replayed, 1), VALIDATOR) is None
    resubmitted = event(context={REPLAY_MARK: {"from": "errors"}})
    assert isinstance(event_row(record(resubmitted, 2), VALIDATOR), RawRow)


def test_cut_respects_the_size_limit_and_keeps_order() -> None:
    rows = raw_rows([event() for _ in range(10)])
    size = rows[0].size
    runs = cut(rows, 3 * size)
    assert [len(r) for r in runs] == [3, 3, 3, 1]
    assert [r.sequence_number for run in runs for r in run] == [str(i) for i in range(1, 11)]
    assert [len(r) for r in cut(rows, 1)] == [1] * 10  # a row larger than the limit still ships


def _lake_rows(settings: Settings) -> list[tuple[str, str, str]]:
    out = []
    for uri, _ in lake.list_files(lake.join(settings.lake_uri, "raw"), settings):
        if DataFileName.parse(uri):
            table = pq.read_table(uri.removeprefix("file://"))
            out.extend(
                zip(*(table[c].to_pylist() for c in ("event_id", "shard_id", "sequence_number")), strict=True)
            )
    return sorted(out)


def test_a_retried_flush_replaces_and_a_recut_one_deletes_the_orphans(settings: Settings) -> None:
    writer = PartitionWriter(settings)
    rows = raw_rows([event() for _ in range(40)], first_seq=1000)
    prefix = "raw/events/year=2026/month=01/day=01/hour=00"
    first = writer.publish(prefix, SHARD, rows[:30], RAW_SCHEMA)
    assert len(first) > 1  # cut by size
    writer.publish(prefix, SHARD, rows[:30], RAW_SCHEMA)  # the same batch again: same names
    assert len(lake.list_files(lake.join(settings.lake_uri, prefix), settings)) == len(first)
    # after a crash the runtime re-cuts the uncheckpointed records differently
    writer.publish(prefix, SHARD, rows[:12], RAW_SCHEMA)
    writer.publish(prefix, SHARD, rows[12:], RAW_SCHEMA)
    expected = sorted((r.values[0], SHARD, r.sequence_number) for r in rows)
    assert _lake_rows(settings) == expected


def test_files_of_other_shards_are_never_replaced(settings: Settings) -> None:
    writer = PartitionWriter(settings)
    prefix = "raw/events/year=2026/month=01/day=01/hour=00"
    rows = raw_rows([event() for _ in range(3)])
    writer.publish(prefix, "shardId-000000000009", rows, RAW_SCHEMA)
    writer.publish(prefix, SHARD, rows, RAW_SCHEMA)
    assert len(_lake_rows(settings)) == 6


def test_collector_and_consumer_letters_become_error_rows() -> None:
    item = {"event_type": "page_view", "ts": "bad"}
    collector = {
        "source": "collector",
        "route": "/v1/events",
        "received_at": "2026-01-01T03:00:00Z",
        "request_id": "r1",
        "index": 0,
        "reasons": ["ts: 'bad' is not a valid date-time"],
        "payload": item,
    }
    row = letter_row(record(collector, 5))
    assert row.source == "collector"
    assert row.failed_at == datetime(2026, 1, 1, 3, tzinfo=UTC)
    assert orjson.loads(row.values[2]) == item
    assert orjson.loads(row.values[5])["route"] == "/v1/events"
    consumer = {
        "dlq_format": 1,
        "source": {"group": "views", "stream": "s", "shard_id": SHARD},
        "reason": "retries_exhausted",
        "error": "ValueError: boom",
        "failed_at": "2026-01-01T04:00:00+00:00",
        "record": {"sequence_number": "9", "partition_key": "u1", "arrival_ts": ARRIVAL, "data": event()},
    }
    row = letter_row(record(consumer, 6))
    assert row.source == "views"
    assert orjson.loads(row.values[1]) == ["retries_exhausted: ValueError: boom"]
    assert orjson.loads(row.values[2])["event_type"] == "page_view"
    garbage = letter_row(record(b"\xff\xfe", 7))
    assert (garbage.source, garbage.values[3]) == ("unknown", "base64")
