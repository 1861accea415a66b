"""Helpers for the delivery integration tests: isolated streams and state per test, putting
generated events, reading the lake back, and the environment for a worker process."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from ingest.delivery.layout import DataFileName, hour_of, parse_hour_partition
from ingest.delivery.schema import row_reasons
from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake import lake
from lambdalake.contract import EventValidator, partition_key
from lambdalake.settings import ENV_PREFIX, Settings
from lambdalake.stream import Record, get_bus
from lambdalake.stream.kinesis import ensure_stream

START = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)

# Short buffers and leases so a test sees many flushes and a quick takeover after kill -9.
FAST = {
    "delivery_buffer_interval_s": 0.3,
    "delivery_buffer_records": 200,
    "delivery_buffer_mib": 0.05,
    "delivery_allowed_lateness_s": 0,
    "delivery_idle_shard_s": 1.0,
    "delivery_close_interval_s": 0.3,
    "consumer_lease_duration_s": 2.0,
    "consumer_idle_poll_s": 0.05,
    "consumer_shard_sync_s": 5.0,
    "consumer_retry_backoff_s": 0.05,
    "consumer_retry_backoff_cap_s": 0.5,
}


def delivery_settings(engines: Settings, tmp_path: Path, shards: int = 2, **overrides: Any) -> Settings:
    """The session's engines with this test's own streams, Redis keys and lake."""
    tag = uuid.uuid4().hex[:8]
    values = {
        **engines.model_dump(),
        **FAST,
        "stream_name": f"delivery-{tag}",
        "dlq_stream_name": f"delivery-dlq-{tag}",
        "delivery_key_prefix": f"test:delivery:{tag}",
        "consumer_key_prefix": f"test:consumer:{tag}",
        "lake_uri_override": (tmp_path / "lake").as_uri(),
        **overrides,
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    ensure_stream(settings, settings.stream_name, shards)
    ensure_stream(settings, settings.dlq_stream_name, 1)
    return settings


@dataclass(frozen=True)
class Put:
    line: bytes
    shard_id: str
    sequence_number: str
    event_id: str | None  # None when the line is not a valid event
    ts: datetime | None


def generated_lines(events: int, seed: int, events_per_s: float = 0.5) -> list[bytes]:
    config = GeneratorConfig(events=events, seed=seed, start=START, events_per_s=events_per_s)
    return [e.line for e in ClickstreamGenerator(config).emitted()]


def put_lines(
    settings: Settings,
    lines: list[bytes],
    chunk: int = 500,
    pause_s: float = 0.0,
    stop: threading.Event | None = None,
    out: list[Put] | None = None,
) -> list[Put]:
    """Put lines on the stream as the collector would key them (until ``stop``); what landed where."""
    bus = get_bus(settings)
    validator = EventValidator() if settings.delivery_validate_events else None
    out = [] if out is None else out
    for i in range(0, len(lines), chunk):
        if stop is not None and stop.is_set():
            break
        part = lines[i : i + chunk]
        parsed: list[Any] = []
        for line in part:
            try:
                parsed.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                parsed.append(None)
        keys = [partition_key(p) if isinstance(p, dict) else uuid.uuid4().hex for p in parsed]
        outcomes = bus.put_records(
            settings.stream_name, [Record(line, key) for line, key in zip(part, keys, strict=True)]
        )
        for line, event, outcome in zip(part, parsed, outcomes, strict=True):
            valid = not row_reasons(event) and (validator is None or validator.is_valid(event))
            out.append(
                Put(
                    line,
                    outcome.shard_id,
                    outcome.sequence_number,
                    event["event_id"] if valid else None,
                    datetime.fromisoformat(event["ts"]) if valid else None,
                )
            )
        if pause_s:
            time.sleep(pause_s)
    return out


def data_files(settings: Settings, zone: str) -> list[tuple[str, int]]:
    base = lake.join(settings.lake_uri, zone)
    return [(u, s) for u, s in lake.list_files(base, settings) if DataFileName.parse(u) and "/_" not in u]


def read_table(settings: Settings, uri: str) -> Any:
    filesystem, path = lake.filesystem(uri, settings)
    return pq.read_table(path, filesystem=filesystem)


def raw_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every raw-zone row, with the hour of the partition it sits in."""
    rows = []
    for uri, _ in data_files(settings, "raw/events"):
        hour = parse_hour_partition(uri)
        for row in read_table(settings, uri).to_pylist():
            rows.append({**row, "_partition_hour": hour})
    return rows


def raw_keys(settings: Settings) -> list[tuple[str, str, str]]:
    return sorted((r["event_id"], r["shard_id"], r["sequence_number"]) for r in raw_rows(settings))


def expected_keys(puts: list[Put]) -> list[tuple[str, str, str]]:
    return sorted((p.event_id, p.shard_id, p.sequence_number) for p in puts if p.event_id)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def assert_partitioned_by_event_hour(rows: list[dict[str, Any]]) -> None:
    assert all(hour_of(r["ts"]) == r["_partition_hour"] for r in rows)


def worker_env(settings: Settings) -> dict[str, str]:
    """LAMBDALAKE_* variables that give a worker process exactly these settings."""
    env = {}
    for name, value in settings.model_dump(by_alias=False).items():
        if value is None or isinstance(value, (dict, list)):
            continue
        key = "LAMBDALAKE_LAKE_URI" if name == "lake_uri_override" else f"{ENV_PREFIX}{name.upper()}"
        if name == "redis_url_override":
            key = "LAMBDALAKE_REDIS_URL"
        env[key] = str(value)
    return env
