"""Shared helpers for the collector's integration tests (no tests here).

Each test module runs its own real collector process (``lambdalake collector``) against the session's
kinesalite, on its own streams (unique names), so what a test reads back is only what it sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from ingest.collector.process import CollectorProcess
from lambdalake.settings import Settings
from lambdalake.stream import TRIM_HORIZON, StreamRecord
from lambdalake.stream.kinesis import KinesisBus, ensure_stream
from tests.conftest import free_port

WRITE_KEY = "test-write-key"
OTHER_KEY = "second-write-key"
AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}


def collector_settings(engines: Settings, shards: int = 2, **overrides: Any) -> Settings:
    """Settings for a collector on the session's engines, with fresh streams and a free port."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        **engines.model_dump(),
        "stream_name": f"collector-test-{tag}",
        "dlq_stream_name": f"collector-test-dlq-{tag}",
        "collector_port": free_port(),
        "write_keys": [WRITE_KEY, OTHER_KEY],
    }
    values.update(overrides)
    settings = Settings(_env_file=None, **values)
    ensure_stream(settings, settings.stream_name, shards)
    ensure_stream(settings, settings.dlq_stream_name, 1)
    return settings


@contextmanager
def running_collector(settings: Settings, require_healthy: bool = True) -> Iterator[CollectorProcess]:
    process = CollectorProcess(settings)
    process.start(timeout_s=60.0, require_healthy=require_healthy)
    try:
        yield process
    finally:
        process.stop()


def read_records(settings: Settings, stream: str) -> list[StreamRecord]:
    """Every record in every shard of ``stream``, from the start."""
    bus = KinesisBus(settings)
    out: list[StreamRecord] = []
    for shard in bus.list_shards(stream):
        iterator: str | None = bus.shard_iterator(stream, shard.shard_id, TRIM_HORIZON)
        while iterator:
            batch = bus.read(shard.shard_id, iterator, limit=10_000)
            out.extend(batch.records)
            if not batch.records and batch.millis_behind_latest == 0:
                break
            iterator = batch.next_iterator
    return out


def read_events(settings: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(r.data) for r in read_records(settings, settings.stream_name)]


def read_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [orjson.loads(r.data) for r in read_records(settings, settings.dlq_stream_name)]


def event(**overrides: Any) -> dict[str, Any]:
    """A valid page_view event with a fresh event_id; overrides replace top-level fields."""
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "anonymous_id": f"anon-{uuid.uuid4().hex[:8]}",
        "ts": "2026-11-22T10:00:00.000Z",
        "properties": {"url": "https://shop.example/p/1"},
        "context": {"ip": "203.0.113.77", "user_agent": "pytest"},
    }
    base.update(overrides)
    return base
