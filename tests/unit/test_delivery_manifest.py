"""Watermarks, which hours close, and what a manifest says (pure functions; no services)."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.delivery.layout import DataFileName
from ingest.delivery.manifest import FileStat, ShardMark, build_manifest, closable_hours, global_watermark

H = 3_600_000
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)


def mark(wm: int, updated: int = T0, caught_up: bool = False, ended: bool = False) -> ShardMark:
    return ShardMark(wm, updated, caught_up, ended)


def test_mark_parses_what_the_lua_script_writes() -> None:
    assert ShardMark.parse(f"{T0}:{T0 + 5}:1:0") == ShardMark(T0, T0 + 5, True, False)
    assert ShardMark.parse("-1:7:0:1") == ShardMark(-1, 7, False, True)


def test_watermark_is_the_lowest_active_shard() -> None:
    marks = {"a": mark(T0 + 3 * H), "b": mark(T0 + H)}
    assert global_watermark(marks, T0, idle_ms=60_000) == T0 + H


def test_a_shard_that_never_wrote_holds_hours_open_until_idle() -> None:
    marks = {"a": mark(T0 + 3 * H), "b": mark(-1, updated=T0)}
    assert global_watermark(marks, T0 + 1000, idle_ms=60_000) is None
    assert global_watermark(marks, T0 + 60_000, idle_ms=60_000) == T0 + 3 * H


def test_a_lagging_shard_holds_hours_open_however_long_it_is_silent() -> None:
    marks = {"a": mark(T0 + 3 * H), "b": mark(T0 + H, updated=T0, caught_up=False)}
    assert global_watermark(marks, T0 + 10 * H, idle_ms=60_000) == T0 + H


def test_caught_up_silent_shards_do_not_hold_hours_open() -> None:
    marks = {"a": mark(T0 + 3 * H, updated=T0 + 10 * H), "b": mark(T0 + H, updated=T0, caught_up=True)}
    assert global_watermark(marks, T0 + 10 * H, idle_ms=60_000) == T0 + 3 * H
    # every shard idle: the stream is quiet, the highest watermark counts
    quiet = {"a": mark(T0 + 3 * H, caught_up=True), "b": mark(T0 + H, caught_up=True)}
    assert global_watermark(quiet, T0 + 10 * H, idle_ms=60_000) == T0 + 3 * H


def test_ended_shards_are_ignored_and_missing_required_shards_block() -> None:
    marks = {"a": mark(T0 + 3 * H), "old": mark(T0, ended=True)}
    assert global_watermark(marks, T0, idle_ms=60_000) == T0 + 3 * H
    assert global_watermark(marks, T0, idle_ms=60_000, required=["a", "new"]) is None
    assert global_watermark({}, T0, idle_ms=60_000) is None


def test_an_hour_closes_once_the_watermark_passes_its_end_plus_lateness() -> None:
    dirty = ["2026-01-01T01", "2026-01-01T00", "2026-01-01T02"]
    lateness = 600
    assert closable_hours(dirty, None, lateness) == []
    assert closable_hours(dirty, T0 + H + 599_999, lateness) == []
    assert closable_hours(dirty, T0 + H + 600_000, lateness) == ["2026-01-01T00"]
    assert closable_hours(dirty, T0 + 3 * H + 600_000, lateness) == [
        "2026-01-01T00",
        "2026-01-01T01",
        "2026-01-01T02",
    ]


def test_manifest_counts_rows_and_sequence_ranges_per_shard() -> None:
    files = [
        FileStat(DataFileName("s1", "900", "1200"), 7, 100),
        FileStat(DataFileName("s1", "15", "800"), 3, 50),
        FileStat(DataFileName("s2", "5", "6"), 2, 40),
    ]
    now = datetime(2026, 1, 1, 2, tzinfo=UTC)
    manifest = build_manifest(datetime(2026, 1, 1, tzinfo=UTC), files, 3, now, T0 + 2 * H, 600)
    assert manifest["version"] == 3
    assert manifest["hour"] == "2026-01-01T00"
    assert manifest["rows"] == 12
    assert [f["name"] for f in manifest["files"]] == [
        "part-s1-15-800.parquet",
        "part-s1-900-1200.parquet",
        "part-s2-5-6.parquet",
    ]
    assert manifest["shards"] == {
        "s1": {"files": 2, "rows": 10, "min_sequence": "15", "max_sequence": "1200"},
        "s2": {"files": 1, "rows": 2, "min_sequence": "5", "max_sequence": "6"},
    }
    assert manifest["watermark"].startswith("2026-01-01T02:00:00")


def test_a_silent_shard_whose_worker_died_holds_hours_open() -> None:
    marks = {"a": mark(T0 + 3 * H, updated=T0 + 10 * H), "b": mark(T0 + H, updated=T0, caught_up=True)}
    assert global_watermark(marks, T0 + 10 * H, idle_ms=60_000, held=["a", "b"]) == T0 + 3 * H
    assert global_watermark(marks, T0 + 10 * H, idle_ms=60_000, held=["a"]) == T0 + H
