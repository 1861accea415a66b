"""Delivery on real kinesalite + Redis into a local lake: every valid record exactly once,
partitioned by event hour; invalid ones in errors/; hours closed by manifests that match the
files; late records reopen an hour with a new manifest version."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.delivery.layout import hour_key, hour_of, parse_hour_key
from ingest.delivery.manifest import hour_files, read_manifest
from ingest.delivery.service import DeliveryService
from lambdalake.settings import Settings
from tests.integration.test_delivery_support import (
    assert_partitioned_by_event_hour,
    data_files,
    delivery_settings,
    expected_keys,
    generated_lines,
    put_lines,
    raw_keys,
    raw_rows,
    read_table,
    wait_for,
)

pytestmark = pytest.mark.integration


def assert_manifests_match_files(settings: Settings, hours: set[str]) -> dict[str, dict[str, Any]]:
    manifests = {}
    for key in hours:
        hour = parse_hour_key(key)
        manifest = read_manifest(settings, hour)
        assert manifest is not None, f"hour {key} has no manifest"
        files = hour_files(settings, hour)
        assert sorted(f["name"] for f in manifest["files"]) == sorted(f.name.name for f in files)
        assert {f["name"]: f["rows"] for f in manifest["files"]} == {f.name.name: f.rows for f in files}
        assert manifest["rows"] == sum(f.rows for f in files)
        assert sum(s["rows"] for s in manifest["shards"].values()) == manifest["rows"]
        manifests[key] = manifest
    return manifests


def test_every_valid_record_lands_once_and_hours_close(engines: Settings, tmp_path: Path) -> None:
    settings = delivery_settings(engines, tmp_path, delivery_validate_events=True)
    puts = put_lines(settings, generated_lines(2000, seed=5))
    expected = expected_keys(puts)
    invalid = [p for p in puts if p.event_id is None]
    assert invalid
    assert len(expected) > 1900
    ids = Counter(p.event_id for p in puts if p.event_id)
    assert any(n > 1 for n in ids.values()), "the generator's client duplicates must be in the input"

    service = DeliveryService(settings, archive_errors=False, close_hours=False).start()
    try:
        wait_for(lambda: len(raw_keys(settings)) >= len(expected), 60, "all valid records in the raw zone")
        wait_for(
            lambda: (
                sum(len(read_table(settings, u)) for u, _ in data_files(settings, "errors")) >= len(invalid)
            ),
            30,
            "invalid records in errors/",
        )
        # Every shard is caught up, leased and silent past delivery_idle_shard_s: the highest
        # watermark closes every hour before the one holding it (allowed lateness 0 here).
        wait_for(lambda: bool(service.close_ready()), 10, "hours to close")
    finally:
        service.stop()
        service.join(20)

    keys = raw_keys(settings)
    assert keys == expected  # same set, and no row twice (client duplicates kept: distinct sequences)
    rows = raw_rows(settings)
    assert_partitioned_by_event_hour(rows)
    assert len({hour_key(r["ts"]) for r in rows}) >= 2

    errors = [row for u, _ in data_files(settings, "errors") for row in read_table(settings, u).to_pylist()]
    assert sorted(e["payload"].encode() for e in errors) == sorted(p.line for p in invalid)
    assert {e["source"] for e in errors} == {"delivery"}
    assert all(orjson.loads(e["reasons"]) for e in errors)

    hours = {hour_key(r["ts"]) for r in rows}
    last = max(hours)
    closed = {h for h in hours if h != last}
    manifests = assert_manifests_match_files(settings, closed)
    assert all(m["version"] == 1 for m in manifests.values())
    assert read_manifest(settings, hour_of(max(r["ts"] for r in rows))) is None
    assert sum(m["rows"] for m in manifests.values()) == sum(1 for r in rows if hour_key(r["ts"]) in closed)

    # Late records for a closed hour land in a new file and the manifest moves to version 2.
    target = min(closed)
    late_ts = hour_of(min(r["ts"] for r in rows if hour_key(r["ts"]) == target)) + timedelta(minutes=1)
    late = [
        orjson.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "page_view",
                "anonymous_id": f"late-{i}",
                "ts": late_ts.isoformat(),
                "properties": {"url": "https://shop.example/late", "path": "/late"},
            }
        )
        for i in range(5)
    ]
    late_puts = put_lines(settings, late)
    files_before = len(manifests[target]["files"])
    service = DeliveryService(settings, archive_errors=False, close_hours=False).start()
    try:
        wait_for(lambda: len(raw_keys(settings)) >= len(expected) + 5, 30, "late records in the raw zone")
        wait_for(
            lambda: any(m["hour"] == target for m in service.close_ready()), 15, "the late hour to reclose"
        )
    finally:
        service.stop()
        service.join(20)
    assert raw_keys(settings) == sorted(expected + expected_keys(late_puts))
    reclosed = assert_manifests_match_files(settings, {target})[target]
    assert reclosed["version"] == 2
    assert reclosed["rows"] == manifests[target]["rows"] + 5
    assert len(reclosed["files"]) > files_before
    for other in closed - {target}:  # hours without late records keep their manifest
        assert read_manifest(settings, parse_hour_key(other)) == manifests[other]
