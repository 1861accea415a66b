"""The batch pipeline on real Spark and PostgreSQL: the watermark's contiguity, a processed interval
published and gated, a rerun leaving identical files, and a corrupted hour failing its gate with
nothing published."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from batch.gates import GateFailed
from batch.pipeline import process_hours
from batch.watermark import Watermark
from lambdalake.settings import Settings
from tests.integration.test_spark_pipeline import START, write_raw_lake
from tests.spark_fixtures import event, spark

__all__ = ["spark"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def settings(engines: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("batch-lake")
    write_raw_lake(root, events=300)
    return engines.model_copy(
        update={
            "lake_uri_override": root.as_uri(),
            "warehouse_schema": "test_batch_wh",
            "batch_meta_schema": "test_batch_meta",
            "batch_hours_per_job": 4,
        }
    )


def _drop(settings: Settings, *schemas: str) -> None:
    with psycopg.connect(settings.warehouse_dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.warehouse_dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {settings.warehouse_schema}.{table}").fetchone()[0])


def _digests(root: Path) -> dict[str, list[str]]:
    """Data files of the clean and curated zones by partition (Spark names files with a random id):
    identical reruns give identical bytes."""
    out: dict[str, list[str]] = {}
    for zone in ("clean", "curated"):
        for p in (root / zone).rglob("*.parquet"):
            out.setdefault(str(p.parent.relative_to(root)), []).append(
                hashlib.sha256(p.read_bytes()).hexdigest()
            )
    return {folder: sorted(hashes) for folder, hashes in out.items()}


def write_corrupted_hour(root: Path, hour: datetime) -> None:
    """A closed raw hour whose purchase has a negative amount: valid JSON, so clean keeps it and the
    orders gate must stop it."""
    rows = [
        event(901, ts=hour + timedelta(minutes=5)),
        event(
            902,
            event_type="purchase",
            ts=hour + timedelta(minutes=6),
            properties={"order_id": "o-neg", "amount": -12.5, "currency": "USD", "items": []},
        ),
    ]
    for row in rows:
        row["received_at"] = row["arrival_ts"] = row["ts"] + timedelta(seconds=1)
    folder = root / f"raw/events/year={hour:%Y}/month={hour:%m}/day={hour:%d}/hour={hour:%H}"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-shardId-0-1-2.parquet")
    (folder / "_manifest.json").write_bytes(orjson.dumps({"version": 1, "rows": len(rows)}))


def test_watermark_is_the_end_of_the_contiguous_published_run(engines: Settings) -> None:
    settings = engines.model_copy(update={"batch_meta_schema": "test_watermark_meta"})
    _drop(settings, settings.batch_meta_schema)
    store = Watermark(settings)
    assert store.watermark() is None
    for hour in (START, START + H, START + 3 * H):
        store.mark_published(hour, 1)
    store.mark_published(START + H, 1)  # idempotent
    assert store.watermark() == START + H  # hour 2 is a hole: serving must not answer it from batch
    store.mark_published(START + 2 * H, 2)
    assert store.watermark() == START + 3 * H
    store.mark_reprocessing(START + H)
    assert store.watermark() == START
    assert store.published_version(START + H) == 1  # what the warehouse still holds
    store.mark_reprocessing(START + 5 * H)  # never published: no version, and no effect on hours before
    assert store.published_version(START + 5 * H) is None
    store.mark_published(START + H, 2)
    assert (store.watermark(), store.published_version(START + H)) == (START + 3 * H, 2)
    store.mark_reprocessing(START)
    assert store.watermark() is None


def test_interval_is_published_gated_and_rerun_identically(settings: Settings, spark: SparkSession) -> None:
    _drop(settings, settings.warehouse_schema, settings.batch_meta_schema)
    root = Path(settings.lake_uri.removeprefix("file://"))
    lines: list[str] = []
    report = process_hours(settings, START, START + 3 * H, lines.append, spark=spark)
    # hour 1 has no manifest but hour 2 has: closed and empty, published as version 0
    assert (report.processed, report.empty, report.watermark) == (
        [START, START + 2 * H],
        [START + H],
        START + 2 * H,
    )
    assert any(line.startswith("published 2026-01-01T00") for line in lines)
    clean_rows = pq.read_table(root / "clean/events").num_rows
    assert _count(settings, "fact_events_v1") == clean_rows > 0
    quality = json.loads((root / "_quality/clean_events/year=2026/month=01/day=01/hour=00.json").read_text())
    assert quality["success"]
    assert quality["rows"] > 0
    assert quality["results"]
    recon = json.loads((root / "_quality/reconciliation/year=2026/month=01/day=01/hour=02.json").read_text())
    assert recon["counts"]["duplicates_removed"] == 1  # the resent copy of an hour-0 event

    before = _digests(root)
    assert process_hours(settings, START, START + 3 * H, spark=spark).processed == []  # up to date
    report = process_hours(settings, START, START + 3 * H, force=True, spark=spark)
    assert report.processed == [START, START + 2 * H]
    assert _digests(root) == before
    assert _count(settings, "fact_events_v1") == clean_rows


def test_corrupted_hour_fails_its_gate_and_publishes_nothing(settings: Settings, spark: SparkSession) -> None:
    root = Path(settings.lake_uri.removeprefix("file://"))
    process_hours(settings, START, START + 3 * H, spark=spark)
    store = Watermark(settings)
    mark, facts, orders = (
        store.watermark(),
        _count(settings, "fact_events_v1"),
        _count(settings, "fact_orders_v1"),
    )
    assert mark == START + 2 * H
    bad_hour = START + 3 * H
    write_corrupted_hour(root, bad_hour)

    with pytest.raises(GateFailed, match=r"orders.*amount"):
        process_hours(settings, START, START + 4 * H, spark=spark)
    assert store.watermark() == mark
    assert store.published_version(bad_hour) is None
    assert (_count(settings, "fact_events_v1"), _count(settings, "fact_orders_v1")) == (facts, orders)
    result = json.loads((root / "_quality/orders/year=2026/month=01/day=01/hour=03.json").read_text())
    assert result["success"] is False


def test_corrupted_hour_inside_a_many_hours_call_is_named_and_nothing_is_published(
    engines: Settings, spark: SparkSession, tmp_path: Path
) -> None:
    """Hours 00..02 gated together (one GE run per table): the corrupted hour 01 between two good
    ones fails the call, is the only hour named, and no hour of the call is published."""
    root = tmp_path / "lake"
    write_raw_lake(root, events=300)  # hour 00 with data, hour 01 without, hour 02 a resent duplicate
    bad_hour = START + H
    write_corrupted_hour(root, bad_hour)
    settings = engines.model_copy(
        update={
            "lake_uri_override": root.as_uri(),
            "warehouse_schema": "test_batch_many_wh",
            "batch_meta_schema": "test_batch_many_meta",
        }
    )
    _drop(settings, settings.warehouse_schema, settings.batch_meta_schema)

    with pytest.raises(
        GateFailed, match=r"failing hours 2026-01-01T01 failed: .*orders 2026-01-01T01: [^;]*amount"
    ):
        process_hours(settings, START, START + 3 * H, spark=spark)
    store = Watermark(settings)
    assert store.watermark() is None
    assert [store.published_version(START + i * H) for i in range(3)] == [None, None, None]
    with psycopg.connect(settings.warehouse_dsn) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"{settings.warehouse_schema}.fact_orders_v1",))
        assert found.fetchone()[0] is None  # the loader never ran

    quality = root / "_quality/orders/year=2026/month=01/day=01"
    bad = json.loads((quality / "hour=01.json").read_text())
    good = json.loads((quality / "hour=00.json").read_text())
    assert (bad["success"], good["success"]) == (False, True)
    assert good["rows"] > 0
    assert [r["result"]["unexpected_count"] for r in bad["results"] if not r["success"]] == [1]
    chunk = json.loads(Path(bad["chunk"]["uri"].removeprefix("file://")).read_text())
    assert (chunk["success"], chunk["rows"]) == (False, good["rows"] + bad["rows"])
    # the clean gate of the three hours passed, each hour reconciled with its own manifest
    recon = json.loads((root / "_quality/reconciliation/year=2026/month=01/day=01/hour=01.json").read_text())
    assert recon["success"]
    assert recon["counts"]["raw_manifest_rows"] == recon["counts"]["clean_rows"] == 2
