"""Raw-zone and errors-zone columns, turning stream records into rows, and Parquet encoding.

The common event fields are typed columns; ``properties`` and ``context`` stay JSON text so a new
field a client starts sending never breaks a write (the batch layer parses what it needs). Stream
metadata (shard, sequence number, arrival time) is kept with every row: the batch layer dedupes by
``event_id`` and orders by it, and the exactly-once checks compare (event_id, shard, sequence).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lambdalake.contract import EventValidator, is_uuid
from lambdalake.stream.bus import StreamRecord

TS = pa.timestamp("ms", tz="UTC")

RAW_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32()),
        pa.field("user_id", pa.string()),
        pa.field("anonymous_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("ts", TS, nullable=False),
        pa.field("received_at", TS),
        pa.field("properties", pa.string(), nullable=False),  # JSON text
        pa.field("context", pa.string()),  # JSON text
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("sequence_number", pa.string(), nullable=False),  # decimal, wider than int64
        pa.field("arrival_ts", TS, nullable=False),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("reasons", pa.string(), nullable=False),  # JSON array of strings
        pa.field("payload", pa.string()),
        pa.field("payload_encoding", pa.string(), nullable=False),  # json | base64 | text (truncated)
        pa.field("failed_at", TS, nullable=False),
        pa.field("detail", pa.string(), nullable=False),  # JSON: everything else the letter said
        pa.field("shard_id", pa.string(), nullable=False),  # where this letter was read
        pa.field("sequence_number", pa.string(), nullable=False),
        pa.field("arrival_ts", TS, nullable=False),
    ]
)

DELIVERY_SOURCE = "delivery"
# `replay --lake raw` re-injects archived events with this mark in their context (free-form in the
# contract), so the speed layer sees them again while delivery skips them: they are in the lake.
REPLAY_MARK = "lambdalake_replay"
LAKE_REPLAY = "lake"
UNKNOWN_SOURCE = "unknown"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def parse_time(value: str) -> datetime:
    """RFC 3339 to an aware UTC datetime (validated upstream; fractions beyond µs are cut)."""
    return datetime.fromisoformat(value).astimezone(UTC)


def safe_source(value: object) -> str:
    """A source name usable as a partition value."""
    text = _UNSAFE.sub("_", str(value or "")).strip("._")[:64]
    return text or UNKNOWN_SOURCE


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _arrival(record: StreamRecord) -> datetime:
    return datetime.fromtimestamp(record.arrival_ts, UTC)


def epoch_ms(moment: datetime) -> int:
    """Timestamps travel to Arrow as epoch milliseconds: ~500x faster to convert than datetimes."""
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class RawRow:
    """One valid event ready for the raw zone, with the event time that picks its partition."""

    ts: datetime
    sequence_number: str
    values: tuple[Any, ...]  # in RAW_SCHEMA order
    size: int  # input bytes, for the buffer's size limit


@dataclass(frozen=True, slots=True)
class ErrorRow:
    source: str
    failed_at: datetime
    sequence_number: str
    values: tuple[Any, ...]  # in ERRORS_SCHEMA order
    size: int


def payload_fields(data: bytes) -> tuple[str, str]:
    """(payload, encoding) of a record's original bytes: JSON text when it is UTF-8, else base64."""
    try:
        return data.decode("utf-8"), "json"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def error_row(
    record: StreamRecord,
    source: str,
    reasons: Sequence[str],
    payload: str | None,
    encoding: str,
    failed_at: datetime,
    detail: dict[str, Any],
) -> ErrorRow:
    values = (
        source,
        orjson.dumps(list(reasons)).decode(),
        payload,
        encoding,
        epoch_ms(failed_at),
        orjson.dumps(detail).decode(),
        record.shard_id,
        record.sequence_number,
        int(record.arrival_ts * 1000),
    )
    return ErrorRow(source, failed_at, record.sequence_number, values, len(record.data))


def is_lake_replay(event: Any) -> bool:
    context = event.get("context") if isinstance(event, dict) else None
    mark = context.get(REPLAY_MARK) if isinstance(context, dict) else None
    return isinstance(mark, dict) and mark.get("from") == LAKE_REPLAY


_OPTIONAL_TEXT = ("user_id", "anonymous_id", "session_id")


def _time_reason(event: dict[str, Any], name: str) -> str | None:
    value = event.get(name)
    if not isinstance(value, str):
        return f"{name}: must be an RFC 3339 date-time string"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return f"{name}: {value[:40]!r} is not an RFC 3339 date-time"
    return None if moment.tzinfo is not None else f"{name}: {value[:40]!r} has no UTC offset"


def row_reasons(event: Any) -> list[str]:
    """Why an event cannot be a raw-zone row (its typed columns); empty when it can.

    This is what delivery always checks; the full contract is checked by the collector, and here
    too when ``delivery_validate_events`` is on (for streams other producers write)."""
    if not isinstance(event, dict):
        return [f"event: must be a JSON object, got {type(event).__name__}"]
    reasons = []
    if not (isinstance(event.get("event_id"), str) and is_uuid(event["event_id"])):
        reasons.append("event_id: must be a UUID string")
    if not (isinstance(event.get("event_type"), str) and event["event_type"]):
        reasons.append("event_type: must be a non-empty string")
    user_id, anonymous_id = event.get("user_id"), event.get("anonymous_id")
    if not ((isinstance(user_id, str) and user_id) or (isinstance(anonymous_id, str) and anonymous_id)):
        reasons.append("event: user_id or anonymous_id is required")
    for name in _OPTIONAL_TEXT:
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            reasons.append(f"{name}: must be a string or null")
    version = event.get("schema_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        reasons.append("schema_version: must be an integer")
    time_reason = _time_reason(event, "ts")
    if time_reason:
        reasons.append(time_reason)
    if event.get("received_at") is not None and (time_reason := _time_reason(event, "received_at")):
        reasons.append(time_reason)
    if not isinstance(event.get("properties"), dict):
        reasons.append("properties: must be an object")
    if not isinstance(event.get("context"), dict | None):
        reasons.append("context: must be an object")
    return reasons


def event_row(record: StreamRecord, validator: EventValidator | None) -> RawRow | ErrorRow | None:
    """A raw-zone row for a well-formed event (and valid, when a validator is given); an errors-zone
    row (with every reason) for anything else; None for an event re-injected from the lake, which
    is there already."""
    try:
        event = orjson.loads(record.data)
    except orjson.JSONDecodeError as exc:
        payload, encoding = payload_fields(record.data)
        return error_row(
            record,
            DELIVERY_SOURCE,
            [f"not JSON: {exc}"],
            payload,
            encoding,
            _arrival(record),
            _origin(record),
        )
    if is_lake_replay(event):
        return None
    reasons = row_reasons(event)
    if not reasons and validator is not None:
        reasons = validator.validate(event)
    if reasons:
        text = record.data.decode("utf-8")  # it parsed as JSON, so it is UTF-8
        return error_row(record, DELIVERY_SOURCE, reasons, text, "json", _arrival(record), _origin(record))
    ts = parse_time(event["ts"])
    received_at = event.get("received_at")
    values = (
        event["event_id"],
        event["event_type"],
        event.get("schema_version"),
        event.get("user_id"),
        event.get("anonymous_id"),
        event.get("session_id"),
        epoch_ms(ts),
        epoch_ms(parse_time(received_at)) if received_at else None,
        _json_text(event["properties"]),
        _json_text(event.get("context")),
        record.shard_id,
        record.sequence_number,
        int(record.arrival_ts * 1000),
    )
    return RawRow(ts, record.sequence_number, values, len(record.data))


def _origin(record: StreamRecord) -> dict[str, Any]:
    return {"partition_key": record.partition_key}


def encode_parquet(rows: Sequence[tuple[Any, ...]], schema: pa.Schema, compression: str) -> bytes:
    """One Parquet file's bytes (columns built by transposing the row tuples)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [
        pa.array(column, type=pa.int64()).cast(field.type)
        if pa.types.is_timestamp(field.type)
        else pa.array(column, type=field.type)
        for column, field in zip(columns, schema, strict=True)
    ]
    table = pa.Table.from_arrays(arrays, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=None if compression == "none" else compression)
    return sink.getvalue()


def event_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The event a raw-zone row was written from (for re-injection into the stream)."""
    event: dict[str, Any] = {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "ts": _rfc3339(row["ts"]),
        "properties": orjson.loads(row["properties"]),
    }
    for name in ("schema_version", "user_id", "anonymous_id", "session_id"):
        if row.get(name) is not None:
            event[name] = row[name]
    if row.get("received_at") is not None:
        event["received_at"] = _rfc3339(row["received_at"])
    if row.get("context") is not None:
        event["context"] = orjson.loads(row["context"])
    return event


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
