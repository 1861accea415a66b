"""clean_events: conform, validate to errors, dedupe across hours by a deterministic kept copy."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from spark_jobs.clean_events import clean_events
from spark_jobs.schemas import CLEAN_COLUMNS, ERROR_COLUMNS
from tests.spark_fixtures import as_dicts, event, raw_frame, spark, ts

__all__ = ["spark"]
pytestmark = pytest.mark.slow

PRIOR_SCHEMA = "event_id string, ts timestamp"


def run(spark: SparkSession, rows, prior=(), lookback_hours: int = 168):
    clean, errors = clean_events(
        raw_frame(spark, rows), spark.createDataFrame(list(prior), PRIOR_SCHEMA), lookback_hours
    )
    return as_dicts(clean, "ts", "event_id"), as_dicts(errors, "event_id", "reason")


def test_valid_rows_are_conformed_and_partitioned_by_event_hour(spark: SparkSession) -> None:
    clean, errors = run(spark, [event(1), event(2, user_id=None, ts=ts("2026-01-01T11:00:00"))])
    assert errors == []
    assert [list(r) for r in clean] == [list(CLEAN_COLUMNS)] * 2
    assert [(r["user_key"], r["year"], r["month"], r["day"], r["hour"]) for r in clean] == [
        ("u1", "2026", "01", "01", "10"),
        ("a1", "2026", "01", "01", "11"),
    ]
    assert clean[0]["properties"] == '{"path": "/", "url": "https://shop.example.com/"}'


def test_invalid_rows_go_to_errors_with_every_reason(spark: SparkSession) -> None:
    clean, errors = run(
        spark,
        [
            event(1),
            event(2, event_id="not-a-uuid"),
            event(3, ts=None, properties="oops"),
            event(4, user_id=None, anonymous_id=None, context="[1]"),
            event(5, event_type=""),
        ],
    )
    assert [r["event_id"] for r in clean] == [event(1)["event_id"]]
    assert [list(r) for r in errors] == [list(ERROR_COLUMNS)] * 4
    assert {r["event_id"][-1]: r["reason"] for r in errors} == {
        "3": "ts: missing or not a timestamp; properties: not a JSON object",
        "4": "user_id or anonymous_id is required; context: not a JSON object",
        "5": "event_type: missing",
        "d": "event_id: missing or not a UUID",
    }
    # read from the lake, errors land in their raw hour; without a file or a ts, in the epoch's hour
    assert {r["event_id"][-1]: (r["year"], r["hour"]) for r in errors} == {
        "3": ("1970", "00"),
        "4": ("2026", "10"),
        "5": ("2026", "10"),
        "d": ("2026", "10"),
    }


def test_duplicates_in_the_hour_keep_the_earliest_received_copy(spark: SparkSession) -> None:
    first = event(1, received_at=ts("2026-01-01T10:15:03"), sequence_number="900")
    earlier = event(1, received_at=ts("2026-01-01T10:15:02"), sequence_number="1000", shard_id="shardId-1")
    tie_a = event(2, sequence_number="99")
    tie_b = event(2, sequence_number="100")  # shorter number is smaller: numeric order, not text
    clean, _ = run(spark, [first, earlier, tie_b, tie_a])
    assert [(r["event_id"][-1], r["sequence_number"]) for r in clean] == [("1", "1000"), ("2", "99")]
    # the same rows in another order keep the same copies
    assert run(spark, [tie_a, earlier, tie_b, first])[0] == clean


def test_copies_already_clean_within_the_lookback_are_dropped(spark: SparkSession) -> None:
    rows = [event(1), event(2), event(3)]
    prior = [
        (event(1)["event_id"], ts("2026-01-01T09:59:00")),  # an hour earlier: dropped
        (event(2)["event_id"], ts("2025-12-25T10:00:00")),  # exactly 7 days earlier: dropped
        (event(3)["event_id"], ts("2025-12-25T09:00:00")),  # beyond the lookback: kept again
    ]
    clean, _ = run(spark, rows, prior)
    assert [r["event_id"][-1] for r in clean] == ["3"]


def test_many_hours_in_one_run_equal_hour_by_hour(spark: SparkSession) -> None:
    """A copy is dropped only by a *kept* copy within the lookback, as sequential runs decide."""
    hours = ["2026-01-01T00:00:00", "2026-01-01T02:00:00", "2026-01-01T04:00:00", "2026-01-01T05:00:00"]
    rows = [event(1, ts=ts(h)) for h in hours] + [event(2, ts=ts(hours[1]))]
    together, _ = run(spark, rows, lookback_hours=3)
    sequential, prior = [], []
    for hour in hours:
        kept, _ = run(spark, [r for r in rows if r["ts"] == ts(hour)], prior, lookback_hours=3)
        sequential += kept
        prior += [(r["event_id"], r["ts"]) for r in kept]
    # 00:00 kept; 02:00 dropped (00:00 kept, 2h); 04:00 kept (last kept copy 4h back); 05:00 dropped
    assert [(r["event_id"][-1], r["hour"]) for r in together] == [("1", "00"), ("2", "02"), ("1", "04")]
    assert together == sorted(sequential, key=lambda r: (str(r["ts"]), r["event_id"]))


def test_string_timestamps_are_conformed_and_bad_ones_are_errors(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [
            (event(1)["event_id"], "page_view", "u1", "2026-01-01T10:00:00.250Z", "{}"),
            (event(2)["event_id"], "page_view", "u1", "yesterday", "{}"),
        ],
        "event_id string, event_type string, user_id string, ts string, properties string",
    )
    clean, errors = clean_events(frame, spark.createDataFrame([], PRIOR_SCHEMA))
    assert [(r["ts"], r["anonymous_id"], r["hour"]) for r in as_dicts(clean)] == [
        (ts("2026-01-01T10:00:00.250"), None, "10")
    ]
    assert [r["reason"] for r in as_dicts(errors)] == ["ts: missing or not a timestamp"]
