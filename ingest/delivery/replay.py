"""Replays: archived dead letters back through validation into the stream, and archived raw
events back into the stream to rebuild the speed layer.

``replay_errors`` re-submits each archived letter's original payload as the collector would (native
or Segment mapping, then the contract); still-invalid ones stay where they are and are reported.
Replayed rows are recorded in a ledger beside the errors (``errors/_replayed/…``), so running the
replay again re-submits nothing twice; a crash between the put and the ledger write can re-submit
that one file's events, whose ``event_id`` the batch layer and the views dedupe.

``replay_lake`` marks every event it re-injects (``REPLAY_MARK`` in its context): the views apply
it (or skip it by ``event_id`` if they still have it) and delivery skips it, so the lake never
gets a second row for an event it already holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.collector.app import EVENT_ROUTES
from ingest.collector.pipeline import native_event, now_rfc3339, stream_partition_key
from ingest.collector.segment import map_message
from ingest.delivery.layout import (
    ERRORS,
    ERRORS_REPLAY_LEDGER,
    HOUR,
    DataFileName,
    hours_between,
    parse_hour_partition,
    raw_hour_prefix,
)
from ingest.delivery.schema import LAKE_REPLAY, REPLAY_MARK, event_from_row
from lambdalake import lake
from lambdalake.contract import EventValidator
from lambdalake.settings import Settings
from lambdalake.stream import Record, StreamBus
from lambdalake.stream.kinesis import MAX_RECORDS_PER_PUT

Progress = Callable[[str], None]


@dataclass
class ErrorsReplay:
    resubmitted: int = 0
    still_invalid: int = 0
    already_replayed: int = 0
    files: int = 0
    sample_reasons: list[str] = field(default_factory=list)


def read_rows(uri: str, settings: Settings) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    filesystem, path = lake.filesystem(uri, settings)
    return list(pq.read_table(path, filesystem=filesystem).to_pylist())


def _ledger_uri(settings: Settings, uri: str) -> str:
    relative = uri[len(lake.join(settings.lake_uri, ERRORS)) + 1 :]
    return lake.join(settings.lake_uri, ERRORS_REPLAY_LEDGER, relative + ".json")


def _read_ledger(settings: Settings, uri: str) -> set[str]:
    if not lake.exists(uri, settings):
        return set()
    return set(orjson.loads(lake.read_bytes(uri, settings))["replayed"])


def resubmission(row: dict[str, Any], validator: EventValidator, received_at: str) -> tuple[Any, list[str]]:
    """The event an archived row re-submits, validated again; (None, reasons) if it still fails."""
    if row["payload_encoding"] != "json" or row["payload"] is None:
        return None, [f"payload kept as {row['payload_encoding']}: cannot be re-submitted"]
    item = orjson.loads(row["payload"])
    route = orjson.loads(row["detail"]).get("route")
    kind = EVENT_ROUTES.get(route) if isinstance(route, str) else None
    if kind is None or kind == "native":
        # A collector letter holds the item as sent; a consumer's or delivery's, the event as written.
        event, reasons = native_event(item, received_at) if kind == "native" else (item, [])
    else:
        event, reasons = map_message(item, None if kind == "batch" else kind, received_at)
        if event is not None:
            event["received_at"] = received_at
    if event is None:
        return None, reasons
    reasons = validator.validate(event)
    return (None, reasons) if reasons else (event, [])


def replay_errors(
    settings: Settings,
    bus: StreamBus,
    since: datetime | None = None,
    sources: Sequence[str] = (),
    progress: Progress = lambda _m: None,
) -> ErrorsReplay:
    """Re-submit archived rejected events (failed at or after ``since``) to the stream."""
    report = ErrorsReplay()
    validator = EventValidator(settings.strict_event_types)
    base = lake.join(settings.lake_uri, ERRORS)
    for uri, _size in lake.list_files(base, settings):
        relative = uri[len(base) + 1 :]
        if relative.startswith(ERRORS_REPLAY_LEDGER[len(ERRORS) + 1 :]) or DataFileName.parse(uri) is None:
            continue
        source = relative.split("/", 1)[0].removeprefix("source=")
        hour = parse_hour_partition(relative)
        if (sources and source not in sources) or (since and hour and hour + HOUR <= since):
            continue
        ledger_uri = _ledger_uri(settings, uri)
        replayed = _read_ledger(settings, ledger_uri)
        records: list[Record] = []
        done: list[str] = []
        for row in read_rows(uri, settings):
            if since and row["failed_at"] < since:
                continue
            if row["sequence_number"] in replayed:
                report.already_replayed += 1
                continue
            event, reasons = resubmission(row, validator, now_rfc3339())
            if event is None:
                report.still_invalid += 1
                if len(report.sample_reasons) < 10:
                    report.sample_reasons.append(reasons[0] if reasons else "invalid")
                continue
            records.append(Record(orjson.dumps(event), stream_partition_key(event)))
            done.append(row["sequence_number"])
        if records:
            bus.put_records(settings.stream_name, records)
            ledger = {"replayed": sorted(replayed | set(done), key=int), "at": now_rfc3339()}
            lake.write_bytes(ledger_uri, orjson.dumps(ledger), settings)
            report.resubmitted += len(records)
            report.files += 1
            progress(f"{relative}: {len(records)} re-submitted")
    return report


def replay_lake(
    settings: Settings,
    bus: StreamBus,
    start: datetime,
    end: datetime,
    progress: Progress = lambda _m: None,
) -> int:
    """Re-inject the raw zone's events with ``start <= ts < end`` into the stream, in shard order."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    total = 0
    if end <= start:
        return 0
    for hour in hours_between(start, end - timedelta(microseconds=1)):
        prefix = lake.join(settings.lake_uri, raw_hour_prefix(hour))
        rows = [
            row
            for uri, _size in lake.list_files(prefix, settings, recursive=False)
            if DataFileName.parse(uri) is not None
            for row in read_rows(uri, settings)
            if start <= row["ts"] < end
        ]
        rows.sort(key=lambda r: (r["shard_id"], int(r["sequence_number"])))
        records = []
        for row in rows:
            event = event_from_row(row)
            mark = {
                "from": LAKE_REPLAY,
                "shard_id": row["shard_id"],
                "sequence_number": row["sequence_number"],
            }
            event["context"] = {**(event.get("context") or {}), REPLAY_MARK: mark}
            records.append(Record(orjson.dumps(event), stream_partition_key(event)))
        for i in range(0, len(records), MAX_RECORDS_PER_PUT):
            bus.put_records(settings.stream_name, records[i : i + MAX_RECORDS_PER_PUT])
        total += len(records)
        if records:
            progress(f"{raw_hour_prefix(hour)}: {len(records)} re-injected")
    return total
