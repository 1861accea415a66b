"""File naming, hour partitioning and the overlap rule that makes a re-cut flush replace its orphans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.delivery.layout import (
    DataFileName,
    errors_hour_prefix,
    hour_key,
    hour_of,
    hour_partition,
    hours_between,
    manifest_path,
    parse_hour_key,
    parse_hour_partition,
    raw_hour_prefix,
)

SHARD = "shardId-000000000003"
BIG = "49655291746013520786389282163316466306537441283557261362"  # kinesalite-sized sequence number


def test_partition_is_by_utc_hour_of_event_time() -> None:
    moment = datetime(2026, 3, 1, 0, 59, 59, 999000, tzinfo=timezone(timedelta(hours=2)))
    assert hour_of(moment) == datetime(2026, 2, 28, 22, tzinfo=UTC)
    assert hour_partition(moment) == "year=2026/month=02/day=28/hour=22"
    assert raw_hour_prefix(moment) == "raw/events/year=2026/month=02/day=28/hour=22"
    assert (
        errors_hour_prefix("collector", moment) == "errors/source=collector/year=2026/month=02/day=28/hour=22"
    )
    assert manifest_path(moment).endswith("hour=22/_manifest.json")


def test_hour_partition_and_key_round_trip() -> None:
    hour = datetime(2026, 12, 31, 23, tzinfo=UTC)
    assert parse_hour_partition(f"s3://b/{raw_hour_prefix(hour)}/part-x-1-2.parquet") == hour
    assert parse_hour_key(hour_key(hour)) == hour
    assert parse_hour_partition("raw/events/elsewhere") is None


def test_file_name_is_deterministic_and_parses_back() -> None:
    name = DataFileName(SHARD, "12", BIG)
    assert name.name == f"part-{SHARD}-12-{BIG}.parquet"
    assert DataFileName(SHARD, "12", BIG).name == name.name
    assert DataFileName.parse(f"file:///lake/raw/events/x/{name.name}") == name
    # a stream name with dashes and dots in the shard label still parses
    label = "lambdalake-dlq.shardId-000000000000"
    assert DataFileName.parse(DataFileName(label, "1", "9").name) == DataFileName(label, "1", "9")


@pytest.mark.parametrize("other", ["_manifest.json", ".tmp-abc", "part-x-1.parquet", "part-x-a-2.parquet"])
def test_other_files_are_not_data_files(other: str) -> None:
    assert DataFileName.parse(other) is None


def test_overlap_compares_sequence_numbers_as_integers_within_one_shard() -> None:
    a = DataFileName(SHARD, "100", "900")
    assert a.overlaps(DataFileName(SHARD, "900", "1000"))
    assert a.overlaps(DataFileName(SHARD, "1", "100"))
    assert a.overlaps(DataFileName(SHARD, "200", "300"))
    assert not a.overlaps(DataFileName(SHARD, "901", "99999"))  # "99999" < "900" as strings
    assert not a.overlaps(DataFileName(SHARD, "1", "99"))
    assert not a.overlaps(DataFileName("shardId-000000000004", "100", "900"))


def test_hours_between_is_inclusive() -> None:
    start = datetime(2026, 1, 1, 22, 30, tzinfo=UTC)
    assert [hour_key(h) for h in hours_between(start, start + timedelta(hours=2))] == [
        "2026-01-01T22",
        "2026-01-01T23",
        "2026-01-02T00",
    ]
    assert hours_between(start, start - timedelta(hours=1)) == []
