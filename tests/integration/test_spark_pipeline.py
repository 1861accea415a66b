"""The batch pipeline over a lake on disk: raw Parquet hours in, clean and curated tables out.

Raw files are written here with pyarrow in the raw zone's layout (the delivery's schema), from
generated events with their duplicates and late arrivals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.contract import EventValidator
from lambdalake.lake import REFERENCE_PRODUCTS, REFERENCE_PROMOS
from spark_jobs import run as batch
from spark_jobs.schemas import CLEAN_EVENTS, ERRORS_CLEAN, METRICS_DAILY, METRICS_HOURLY, ORDERS, SESSIONS
from tests.conftest import make_settings
from tests.spark_fixtures import spark

__all__ = ["spark"]
pytestmark = [pytest.mark.slow]
START = datetime(2026, 1, 1, tzinfo=UTC)


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def write_raw_lake(root: Path, events: int = 900) -> dict[str, object]:
    """Raw Parquet hours and reference CSVs; returns what the clean zone must hold."""
    generator = ClickstreamGenerator(
        GeneratorConfig(events=events, seed=3, events_per_s=0.2, duplicate_rate=0.05)
    )
    validator = EventValidator()
    by_hour: dict[datetime, list[dict[str, object]]] = defaultdict(list)
    ids: set[str] = set()
    for sequence, line in enumerate(generator.lines()):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if validator.validate(event):
            continue
        ts = _parse(event["ts"])
        received = ts + timedelta(seconds=1 + sequence % 7)
        by_hour[ts.replace(minute=0, second=0, microsecond=0)].append(
            {
                "event_id": event["event_id"],
                "event_type": event["event_type"],
                "user_id": event.get("user_id"),
                "anonymous_id": event.get("anonymous_id"),
                "session_id": event.get("session_id"),
                "ts": ts,
                "received_at": received,
                "schema_version": 1,
                "properties": json.dumps(event["properties"]),
                "context": json.dumps(event["context"]),
                "shard_id": f"shardId-{sequence % 2:012d}",
                "sequence_number": str(10**20 + sequence),
                "arrival_ts": received,
            }
        )
        ids.add(event["event_id"])
    # a copy of an hour-0 event resent with a later event time lands in hour 2: dropped by the lookback
    resent = dict(by_hour[START][0], ts=START + timedelta(hours=2, minutes=5))
    by_hour[START + timedelta(hours=2)].append(resent)
    for hour, rows in by_hour.items():
        folder = root / f"raw/events/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / "shard-0-1.parquet")
        (folder / "_manifest.json").write_text(json.dumps({"rows": len(rows)}))
    for path, data in (
        (REFERENCE_PRODUCTS, generator.products_csv()),
        (REFERENCE_PROMOS, generator.promos_csv()),
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return {"ids": ids, "hours": sorted(by_hour), "resent": resent["event_id"]}


def _snapshot(spark: SparkSession, uri: str) -> list[tuple]:
    frame = spark.read.parquet(uri)
    return sorted(tuple(str(v) for v in row) for row in frame.collect())


def test_backfill_writes_every_table_and_a_rerun_is_identical(spark: SparkSession, tmp_path: Path) -> None:
    expected = write_raw_lake(tmp_path / "lake")
    lake = (tmp_path / "lake").as_uri()
    settings = make_settings(tmp_path / "home", batch_hours_per_job=2)
    end = expected["hours"][-1] + timedelta(hours=1)
    batch.run(spark, lake, START, end, settings, daily=True)

    clean = spark.read.parquet(f"{lake}/{CLEAN_EVENTS}")
    rows = clean.select("event_id", "ts").collect()
    assert len(rows) == len({r["event_id"] for r in rows}) == len(expected["ids"])  # one copy of each
    resent = [r for r in rows if r["event_id"] == expected["resent"]]
    assert [r["ts"].astimezone(UTC).hour for r in resent] == [0]  # the later copy was dropped
    tables = {
        name: _snapshot(spark, batch.curated(lake, name))
        for name in (METRICS_HOURLY, METRICS_DAILY, ORDERS, SESSIONS)
    }
    assert all(tables.values())
    hourly_orders = {r for r in tables[METRICS_HOURLY] if r[0] == "orders" and r[1] == "1h"}
    assert sum(float(r[6]) for r in hourly_orders) == len(tables[ORDERS])
    files_per_hour = {
        str(folder.relative_to(tmp_path)): len(list(folder.glob("*.parquet")))
        for folder in (tmp_path / "lake" / CLEAN_EVENTS).glob("year=*/month=*/day=*/hour=*")
    }
    assert sorted(files_per_hour.values()) == [1, 1]  # one file an hour; hour 2 held only the resend

    before = {name: rows for name, rows in tables.items()} | {
        "clean": _snapshot(spark, f"{lake}/{CLEAN_EVENTS}")
    }
    batch.run(spark, lake, START, end, settings, daily=True)
    after = {name: _snapshot(spark, batch.curated(lake, name)) for name in tables}
    after["clean"] = _snapshot(spark, f"{lake}/{CLEAN_EVENTS}")
    assert after == before
    assert not (tmp_path / "lake" / ERRORS_CLEAN).exists() or not list(
        (tmp_path / "lake" / ERRORS_CLEAN).rglob("*.parquet")
    )
