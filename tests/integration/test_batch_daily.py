"""The batch layer's daily work on real Spark and PostgreSQL: a generated day's daily tables and
sessions gated and published (a rerun identical), reference data gated before it replaces the
dimensions, and retention deleting old raw and error hours only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pyspark.sql import SparkSession

from batch.gates import GateFailed
from batch.maintenance import apply_retention
from batch.pipeline import daily_warehouse_tables, process_day, process_hours, publish_reference
from ingest.delivery.layout import raw_hour_prefix
from lambdalake.lake import REFERENCE_PRODUCTS
from lambdalake.settings import Settings
from tests.integration.test_batch_maintenance import START, lake_settings, write_delivery_lake
from tests.integration.test_batch_pipeline import _digests
from tests.spark_fixtures import spark

__all__ = ["spark"]
pytestmark = [pytest.mark.integration]
H = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def day_lake(
    engines: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Settings, list[datetime]]:
    root = tmp_path_factory.mktemp("daily") / "lake"
    settings = lake_settings(engines, root, "daily")
    with psycopg.connect(settings.warehouse_dsn, autocommit=True) as conn:
        for schema in (settings.warehouse_schema, settings.batch_meta_schema):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return root, settings, write_delivery_lake(root, settings)


def _count(settings: Settings, table: str, where: str = "TRUE") -> int:
    with psycopg.connect(settings.warehouse_dsn) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {settings.warehouse_schema}.{table} WHERE {where}"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_process_day_publishes_gated_daily_tables_and_reruns_identically(
    day_lake: tuple[Path, Settings, list[datetime]], spark: SparkSession
) -> None:
    root, settings, hours = day_lake
    assert {h.date() for h in hours} == {START.date()}
    assert process_hours(settings, START, hours[-1] + H, spark=spark).processed == hours

    rows = process_day(settings, START, spark=spark)

    counts = {name: _count(settings, name) for name in daily_warehouse_tables()}
    assert rows == sum(counts.values())
    assert all(
        counts[name] > 0 for name in ("agg_metrics_daily_v1", "fact_sessions_v1", "user_daily_facts_v1")
    )
    users = _count(settings, "fact_events_v1", "TRUE")  # every clean event's user has a daily fact row
    with psycopg.connect(settings.warehouse_dsn) as conn:
        distinct = conn.execute(
            f"SELECT count(DISTINCT user_key) FROM {settings.warehouse_schema}.fact_events_v1"
        ).fetchone()
    assert distinct is not None
    assert 0 < counts["user_daily_facts_v1"] == int(distinct[0]) <= users
    for suite in ("metrics_daily", "sessions", "user_daily", "funnel_daily"):
        result = json.loads((root / f"_quality/{suite}/year=2026/month=01/day=01.json").read_text())
        assert result["success"], suite
        assert result["rows"] > 0, suite

    daily = {k: v for k, v in _digests(root).items() if "hour=" not in k and k.startswith("curated")}
    assert len(daily) >= 5
    assert process_day(settings, START, spark=spark) == rows
    assert {k: v for k, v in _digests(root).items() if k in daily} == daily
    assert {name: _count(settings, name) for name in daily_warehouse_tables()} == counts


def test_publish_reference_loads_the_dimensions_only_when_the_gate_passes(
    day_lake: tuple[Path, Settings, list[datetime]],
) -> None:
    root, settings, _hours = day_lake
    products_csv = root / REFERENCE_PRODUCTS
    products = products_csv.read_text().splitlines()
    promos = (root / "reference/promos/promos.csv").read_text().splitlines()

    loaded = publish_reference(settings)

    assert _count(settings, "dim_products_v1") == len(products) - 1  # minus the header
    assert _count(settings, "dim_promos_v1") == len(promos) - 1
    assert loaded == len(products) + len(promos) - 2
    assert publish_reference(settings) == loaded  # a rerun replaces, never appends

    original = products_csv.read_text()
    try:  # a duplicated product id: the gate stops it and the dimension keeps its rows
        products_csv.write_text("\n".join([*products, products[1]]) + "\n")
        with pytest.raises(GateFailed, match=r"reference_products.*product_id"):
            publish_reference(settings)
        assert _count(settings, "dim_products_v1") == len(products) - 1
    finally:
        products_csv.write_text(original)


def test_retention_deletes_old_raw_and_error_hours_only(engines: Settings, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    settings = lake_settings(engines, root, "retention", batch_raw_retention_days=1)
    hours = write_delivery_lake(root, settings)
    errors = root / "errors/source=clean_events" / raw_hour_prefix(hours[0]).removeprefix("raw/events/")
    errors.mkdir(parents=True)
    (errors / "part-0.parquet").write_bytes(b"x")
    clean = root / "clean/events" / raw_hour_prefix(hours[0]).removeprefix("raw/events/")
    clean.mkdir(parents=True)
    (clean / "part-0.parquet").write_bytes(b"x")
    raw_files = {h: sorted(p.name for p in (root / raw_hour_prefix(h)).iterdir()) for h in hours}

    # one day after the second hour ended: the first two hours are past the cut-off, the rest not
    now = hours[1] + H + DAY
    deleted = apply_retention(settings, now)

    assert deleted == len(raw_files[hours[0]]) + len(raw_files[hours[1]]) + 1
    for hour in hours[:2]:
        folder = root / raw_hour_prefix(hour)
        assert not folder.exists() or not any(folder.iterdir()), hour
    for hour in hours[2:]:
        assert sorted(p.name for p in (root / raw_hour_prefix(hour)).iterdir()) == raw_files[hour]
    assert not (errors / "part-0.parquet").exists()
    assert (clean / "part-0.parquet").exists()  # clean and curated keep their history
    assert (root / REFERENCE_PRODUCTS).exists()
    assert apply_retention(settings, now) == 0
