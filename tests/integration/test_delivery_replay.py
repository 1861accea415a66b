"""Dead letters archived from the DLQ stream into errors/, re-submitted after a fix (through
validation again, once only), and raw events re-injected into the stream without a second lake row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.collector.pipeline import Pipeline
from ingest.delivery.replay import replay_errors
from ingest.delivery.schema import REPLAY_MARK
from ingest.delivery.service import DeliveryService
from lambdalake.settings import Settings
from lambdalake.stream import TRIM_HORIZON, get_bus
from tests.integration.test_delivery_support import (
    data_files,
    delivery_settings,
    raw_rows,
    read_table,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration


def search(i: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "search",
        "user_id": f"user-{i}",
        "ts": f"2026-01-01T05:{i:02d}:00Z",
        "properties": {"query": f"shoes {i}", "results": 3},
    }


def errors_rows(settings: Settings) -> list[dict[str, Any]]:
    return [r for u, _ in data_files(settings, "errors") for r in read_table(settings, u).to_pylist()]


def stream_events(settings: Settings) -> list[dict[str, Any]]:
    bus = get_bus(settings)
    out = []
    for shard in bus.list_shards(settings.stream_name):
        iterator = bus.shard_iterator(settings.stream_name, shard.shard_id, TRIM_HORIZON)
        while True:
            batch = bus.read(shard.shard_id, iterator, 10000)
            out.extend(orjson.loads(r.data) for r in batch.records)
            if not batch.records or batch.next_iterator is None:
                break
            iterator = batch.next_iterator
    return out


def test_dead_letters_are_archived_and_replayed_once_after_a_fix(engines: Settings, tmp_path: Path) -> None:
    settings = delivery_settings(engines, tmp_path)
    strict = Settings(_env_file=None, **{**settings.model_dump(), "strict_event_types": ["page_view"]})  # type: ignore[arg-type]
    bus = get_bus(settings)
    # The collector in strict mode rejects searches (native and Segment) and a broken event.
    searches = [search(i) for i in range(5)]
    broken = {**search(9), "ts": "yesterday"}
    accepted = {
        "event_id": str(uuid.uuid4()),
        "event_type": "page_view",
        "anonymous_id": "a1",
        "ts": "2026-01-01T05:30:00Z",
        "properties": {"url": "https://shop.example/", "path": "/"},
    }
    pipeline = Pipeline(strict, bus)
    pipeline.ingest("/v1/events", "native", [*searches, broken, accepted])
    segment = {
        "type": "track",
        "event": "Products Searched",
        "messageId": str(uuid.uuid4()),
        "userId": "user-seg",
        "timestamp": "2026-01-01T05:40:00Z",
        "properties": {"query": "hats"},
    }
    pipeline.ingest("/v1/track", "track", [segment])

    service = DeliveryService(settings).start()
    try:
        wait_for(lambda: len(errors_rows(settings)) >= 7, 30, "dead letters in errors/")
        wait_for(lambda: len(raw_rows(settings)) >= 1, 30, "the accepted event")
        letters = errors_rows(settings)
        assert {r["source"] for r in letters} == {"collector"}
        assert all("strict mode" in r["reasons"] or "ts" in r["reasons"] for r in letters)
        now = datetime.now(UTC)
        for uri, _ in data_files(settings, "errors"):  # partitioned by source and the hour it failed
            assert f"/errors/source=collector/year={now:%Y}/month={now:%m}/day={now:%d}/hour=" in uri

        # The fix: strict mode off. Re-submission validates again; the broken event stays.
        report = replay_errors(settings, bus)
        assert (report.resubmitted, report.still_invalid) == (6, 1)
        wait_for(lambda: len(raw_rows(settings)) >= 7, 30, "re-submitted events in the raw zone")
        again = replay_errors(settings, bus)
        assert (again.resubmitted, again.already_replayed, again.still_invalid) == (0, 6, 1)
        assert replay_errors(settings, bus, since=datetime(2100, 1, 1, tzinfo=UTC)).resubmitted == 0

        rows = raw_rows(settings)
        ids = sorted(r["event_id"] for r in rows)
        assert ids == sorted(
            [*(s["event_id"] for s in searches), accepted["event_id"], rows_id(rows, "user-seg")]
        )
        assert len(errors_rows(settings)) == 7  # still-invalid letters stay; nothing new was dead-lettered

        # Rebuilding the speed layer: re-inject the raw zone (the CLI, as an operator would).
        env = {**os.environ, **worker_env(settings)}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lambdalake",
                "replay",
                "--lake",
                "raw",
                "--from",
                "2026-01-01T05:00Z",
                "--to",
                "2026-01-01T06:00Z",
            ],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert json.loads(done.stdout.decode().splitlines()[-1]) == {"reinjected": 7}
        wait_for(lambda: service.stats.skipped_replays >= 7, 30, "delivery to see the re-injected events")
    finally:
        service.stop()
        service.join(20)
    assert len(raw_rows(settings)) == 7  # the lake has no second row for a re-injected event
    replayed = [e for e in stream_events(settings) if REPLAY_MARK in (e.get("context") or {})]
    assert sorted(e["event_id"] for e in replayed) == ids


def rows_id(rows: list[dict[str, Any]], user_id: str) -> str:
    return next(r["event_id"] for r in rows if r["user_id"] == user_id)
