"""One local SparkSession for every Spark test, and builders of small event rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.schemas import RAW_COLUMNS
from spark_jobs.session import BASE_CONF


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    builder = SparkSession.builder.master("local[2]").appName("lambdalake-tests")
    conf = {
        **BASE_CONF,
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def ts(text: str) -> datetime:
    """A UTC datetime from '2026-01-01T10:15:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


BASE_EVENT: dict[str, Any] = {
    "event_id": "00000000-0000-4000-8000-000000000001",
    "event_type": "page_view",
    "user_id": "u1",
    "anonymous_id": "a1",
    "session_id": "s1",
    "ts": ts("2026-01-01T10:15:00"),
    "received_at": ts("2026-01-01T10:15:01"),
    "schema_version": 1,
    "properties": {"path": "/", "url": "https://shop.example.com/"},
    "context": {"country": "US", "device": "mobile"},
    "shard_id": "shardId-000000000000",
    "sequence_number": "100",
    "arrival_ts": ts("2026-01-01T10:15:02"),
}


def event(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A raw row: the base event with event_id number ``n`` and the overrides."""
    row = {**BASE_EVENT, "event_id": f"00000000-0000-4000-8000-{n:012d}", **overrides}
    for name in ("properties", "context"):
        if isinstance(row[name], Mapping):
            row[name] = json.dumps(row[name])
    return row


def raw_frame(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    schema = ", ".join(f"{name} {kind.simpleString()}" for name, kind in RAW_COLUMNS.items())
    return spark.createDataFrame([tuple(r.get(c) for c in RAW_COLUMNS) for r in rows], schema)


def _utc(value: Any) -> Any:
    # PySpark hands timestamps back naive, in the Python process's local time zone.
    return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def as_dicts(frame: DataFrame, *order: str) -> list[dict[str, Any]]:
    rows = [{k: _utc(v) for k, v in r.asDict(recursive=True).items()} for r in frame.collect()]
    return sorted(rows, key=lambda r: tuple(str(r[c]) for c in order)) if order else rows
