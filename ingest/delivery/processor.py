"""The delivery record processors: stream -> raw zone, and DLQ stream -> errors zone.

Buffering: the consumer runtime checkpoints a batch as soon as ``process_records`` returns and has
no way yet to checkpoint less, so a buffer held across batches would be lost by a ``kill -9``.
Delivery therefore lets the runtime do the buffering: its group's batch size and batching window
are the buffer's record limit and interval (``delivery_config``), and ``process_records`` writes
every record it is given before returning, cutting files at the buffer's size. One runtime batch
is one Firehose buffer; the checkpoint moves only after the files are durable.

Any failure to write is a sink outage (``RetryLater``): the runtime retries the same batch, the
same names are written again, and orphans of the failed attempt are replaced (``writer``).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.delivery.layout import errors_hour_prefix, hour_key, hour_of, raw_hour_prefix
from ingest.delivery.manifest import HourState
from ingest.delivery.schema import (
    ERRORS_SCHEMA,
    RAW_SCHEMA,
    UNKNOWN_SOURCE,
    ErrorRow,
    RawRow,
    error_row,
    event_row,
    parse_time,
    payload_fields,
    safe_source,
)
from ingest.delivery.writer import PartitionWriter
from lambdalake.consumer import BatchContext, ConsumerConfig, RetryLater, ShutdownReason
from lambdalake.contract import EventValidator
from lambdalake.settings import Settings
from lambdalake.stream.bus import Position, StreamRecord

LATENCY_SAMPLES = 200_000


def delivery_config(settings: Settings, group: str, stream: str) -> ConsumerConfig:
    """The runtime knobs that make one batch one buffer: batch size and window from the buffer."""
    return ConsumerConfig.from_settings(
        settings,
        group,
        stream,
        batch_size=settings.delivery_buffer_records,
        max_batching_window_s=settings.delivery_buffer_interval_s,
    )


class DeliveryStats:
    """Counters and put->durable latencies (from the stream's arrival time), shared by shards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        self.errors = 0
        self.skipped_replays = 0
        self.files = 0
        self.bytes = 0
        self.latencies_s: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def observe(
        self, records: list[StreamRecord], rows: int, errors: int, skipped: int, files: int, size: int
    ) -> None:
        durable_at = time.time()
        with self._lock:
            self.rows += rows
            self.errors += errors
            self.skipped_replays += skipped
            self.files += files
            self.bytes += size
            self.latencies_s.extend(durable_at - r.arrival_ts for r in records)


def _publish_errors(writer: PartitionWriter, ctx: BatchContext, rows: list[ErrorRow]) -> tuple[int, int]:
    """Errors files carry the stream in their name: delivery's own rejects and the DLQ's letters
    can share a source partition, and their shards' sequence ranges must never be compared."""
    label = f"{ctx.stream}.{ctx.shard_id}"
    by_partition: dict[tuple[str, datetime], list[ErrorRow]] = defaultdict(list)
    for row in rows:
        by_partition[(row.source, hour_of(row.failed_at))].append(row)
    files = size = 0
    for (source, hour), part in sorted(by_partition.items()):
        for published in writer.publish(errors_hour_prefix(source, hour), label, part, ERRORS_SCHEMA):
            files += 1
            size += published.bytes
    return files, size


class DeliveryProcessor:
    """Writes a shard's records to ``raw/events/<event-time hour>/`` (invalid ones to ``errors/``)."""

    def __init__(
        self,
        settings: Settings,
        state: HourState,
        stats: DeliveryStats | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.stats = stats or DeliveryStats()
        self.writer = PartitionWriter(settings)
        self.validator = (
            EventValidator(settings.strict_event_types) if settings.delivery_validate_events else None
        )
        self.now = now
        self.shard_id = ""

    def initialize(self, shard_id: str, start_position: Position) -> None:
        # Registering the shard makes it hold hours open until it has written (or proved idle).
        self.shard_id = shard_id
        self.state.record(shard_id, None, int(self.now() * 1000), caught_up=False)

    def process_records(self, records: list[StreamRecord], ctx: BatchContext) -> None:
        raw: dict[datetime, list[RawRow]] = defaultdict(list)
        errors: list[ErrorRow] = []
        skipped = 0
        watermark_ms: int | None = None
        for record in records:
            row = event_row(record, self.validator)
            if row is None:
                skipped += 1
            elif isinstance(row, ErrorRow):
                errors.append(row)
            else:
                raw[hour_of(row.ts)].append(row)
                # A client clock ahead of ours must not close hours early: cap at arrival time.
                event_ms = min(int(row.ts.timestamp() * 1000), int(record.arrival_ts * 1000))
                watermark_ms = event_ms if watermark_ms is None else max(watermark_ms, event_ms)
        files = size = 0
        try:
            for hour, rows in sorted(raw.items()):
                for published in self.writer.publish(raw_hour_prefix(hour), ctx.shard_id, rows, RAW_SCHEMA):
                    files += 1
                    size += published.bytes
            error_files, error_size = _publish_errors(self.writer, ctx, errors)
        except OSError as exc:  # pyarrow raises OSError for local and S3 failures alike
            raise RetryLater(f"lake write failed: {exc}") from exc
        self.state.record(
            ctx.shard_id,
            watermark_ms,
            int(self.now() * 1000),
            caught_up=ctx.millis_behind_latest == 0,
            hours=[hour_key(h) for h in raw],
        )
        rows_written = sum(len(r) for r in raw.values())
        self.stats.observe(
            records, rows_written, len(errors), skipped, files + error_files, size + error_size
        )

    def shutdown(self, reason: ShutdownReason) -> None:
        if reason == "TERMINATE":  # a closed shard no longer holds hours open
            self.state.record(self.shard_id, None, int(self.now() * 1000), caught_up=True, ended=True)


def letter_row(record: StreamRecord) -> ErrorRow:
    """An errors-zone row for one DLQ record: the collector's letters and the consumer runtime's."""
    arrival = datetime.fromtimestamp(record.arrival_ts, UTC)
    try:
        letter: Any = orjson.loads(record.data)
    except orjson.JSONDecodeError:
        letter = None
    if not isinstance(letter, dict):
        payload, encoding = payload_fields(record.data)
        return error_row(record, UNKNOWN_SOURCE, ["not a dead letter"], payload, encoding, arrival, {})
    detail = {k: v for k, v in letter.items() if k not in ("payload", "payload_text", "record", "reasons")}
    source = letter.get("source")
    if isinstance(source, dict):  # the consumer runtime's letter: {"group", "stream", "shard_id"}
        body = letter.get("record") if isinstance(letter.get("record"), dict) else {}
        detail["record"] = {k: v for k, v in body.items() if k not in ("data", "data_base64")}
        reasons = [f"{letter.get('reason')}: {letter.get('error')}"]
        if "data" in body:
            payload, encoding = orjson.dumps(body["data"]).decode(), "json"
        else:
            payload, encoding = body.get("data_base64"), "base64"
        return error_row(
            record,
            safe_source(source.get("group")),
            reasons,
            payload,
            encoding,
            _when(letter, "failed_at", arrival),
            detail,
        )
    reasons = [str(r) for r in letter.get("reasons") or []] or ["no reason given"]
    if letter.get("payload_truncated"):
        payload, encoding = letter.get("payload_text"), "text"
    else:
        payload, encoding = orjson.dumps(letter.get("payload")).decode(), "json"
    return error_row(
        record, safe_source(source), reasons, payload, encoding, _when(letter, "received_at", arrival), detail
    )


def _when(letter: dict[str, Any], field: str, default: datetime) -> datetime:
    value = letter.get(field)
    try:
        return parse_time(value) if isinstance(value, str) else default
    except ValueError:
        return default


class ErrorsArchiver:
    """Archives the DLQ stream into ``errors/source=<source>/<hour failed>/``, one row per letter."""

    def __init__(self, settings: Settings, stats: DeliveryStats | None = None) -> None:
        self.writer = PartitionWriter(settings)
        self.stats = stats or DeliveryStats()

    def initialize(self, shard_id: str, start_position: Position) -> None:
        return None

    def process_records(self, records: list[StreamRecord], ctx: BatchContext) -> None:
        rows = [letter_row(r) for r in records]
        try:
            files, size = _publish_errors(self.writer, ctx, rows)
        except OSError as exc:
            raise RetryLater(f"lake write failed: {exc}") from exc
        self.stats.observe(records, 0, len(rows), 0, files, size)

    def shutdown(self, reason: ShutdownReason) -> None:
        return None
