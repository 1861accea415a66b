"""Loads into the real local PostgreSQL: totals equal the Parquet's, reloads are identical, hours load
concurrently, a failed load changes nothing, and the BI queries agree with DuckDB over the lake."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bench.warehouse import START, build_lake
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings, get_settings
from warehouse.duckdb_catalog import DuckDBCatalog
from warehouse.loader import LoadError
from warehouse.postgres import PostgresLoader
from warehouse.query import bi_query_params
from warehouse.render import render_one
from warehouse.tables import Interval, bi_queries, lake_tables, views, warehouse_tables

pytestmark = pytest.mark.integration

DAYS = 2
HOURLY = [n for n, t in warehouse_tables().items() if t.grain == "hour"]
DAILY = [n for n, t in warehouse_tables().items() if t.grain != "hour"]
HOUR = START + timedelta(hours=13)


@pytest.fixture(scope="module")
def settings(engines: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    lake_dir = tmp_path_factory.mktemp("warehouse-lake")
    configured = engines.model_copy(
        update={"lake_uri_override": lake_dir.as_uri(), "warehouse_schema": "test_warehouse_pg"}
    )
    build_lake(configured, events=12_000, events_per_s=12_000 / (DAYS * 86400))
    return configured


@pytest.fixture(scope="module")
def loader(settings: Settings) -> PostgresLoader:
    loader = PostgresLoader(settings)
    with loader.connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {settings.warehouse_schema} CASCADE")
    loader.ensure_schema()
    loader.ensure_schema()  # idempotent
    for day in range(DAYS):
        for hour in range(24):
            loader.publish_hour(START + timedelta(days=day, hours=hour), HOURLY)
        loader.publish_hour(START + timedelta(days=day), DAILY)
    return loader


def _lake_path(settings: Settings, relative: str) -> Path:
    return Path(settings.lake_uri.removeprefix("file://")) / relative


def _parquet(settings: Settings, lake_table: str) -> pa.Table:
    table = lake_tables()[lake_table]
    return ds.dataset(_lake_path(settings, table.location), format="parquet", partitioning="hive").to_table()


def _scalar(loader: PostgresLoader, sql: str) -> Any:
    with loader.connect() as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


def _snapshot(loader: PostgresLoader, table: str) -> list[tuple[Any, ...]]:
    columns = ", ".join(c.name for c in warehouse_tables()[table].columns)
    with loader.connect() as conn:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}").fetchall()


def _cents(values: list[float | None]) -> Decimal:
    return sum((Decimal(str(v)).quantize(Decimal("0.01")) for v in values if v is not None), Decimal(0))


def test_every_table_holds_exactly_the_parquets_rows(settings: Settings, loader: PostgresLoader) -> None:
    for name, table in warehouse_tables().items():
        if table.source is None or table.source.format != "parquet":
            continue
        expected = _parquet(settings, table.source.name).num_rows
        assert expected > 0, name
        assert _scalar(loader, f"SELECT COUNT(*) FROM {name}") == expected, name
    assert _scalar(loader, "SELECT COUNT(*) FROM dim_products_v1") == 200
    assert _scalar(loader, "SELECT COUNT(*) FROM dim_promos_v1") > 1
    assert _scalar(loader, "SELECT COUNT(*) FROM dim_promos_v1 WHERE category IS NULL") == 1  # WELCOME10


def test_warehouse_totals_equal_the_parquets(settings: Settings, loader: PostgresLoader) -> None:
    events = _parquet(settings, "clean_events")
    assert _scalar(loader, "SELECT COUNT(DISTINCT event_id) FROM fact_events_v1") == events.num_rows
    assert _scalar(loader, "SELECT COUNT(*) FROM dim_users_v1") == len(set(events["user_key"].to_pylist()))
    assert _scalar(loader, "SELECT SUM(events) FROM dim_users_v1") == events.num_rows

    orders = _parquet(settings, "orders_v1")
    assert _scalar(loader, "SELECT SUM(amount) FROM fact_orders_v1") == _cents(orders["amount"].to_pylist())
    assert _scalar(loader, "SELECT SUM(units) FROM fact_orders_v1") == pa.compute.sum(orders["units"]).as_py()
    items = _scalar(loader, "SELECT SUM(jsonb_array_length(items)) FROM fact_orders_v1")
    assert items == sum(len(i) for i in orders["items"].to_pylist())

    products = _parquet(settings, "product_daily_v1")
    assert _scalar(loader, "SELECT SUM(revenue) FROM agg_product_daily_v1") == _cents(
        products["revenue"].to_pylist()
    )
    assert (
        _scalar(loader, "SELECT SUM(views) FROM agg_product_daily_v1")
        == pa.compute.sum(products["views"]).as_py()
    )

    users = _parquet(settings, "user_daily_v1")
    assert _scalar(loader, "SELECT SUM(revenue) FROM user_daily_facts_v1") == _cents(
        users["revenue"].to_pylist()
    )

    metrics = _parquet(settings, "metrics_hourly_v1")
    total = _scalar(loader, "SELECT SUM(value) FROM agg_metrics_hourly_v1")
    assert total == pytest.approx(pa.compute.sum(metrics["value"]).as_py(), rel=1e-12)
    keys = _scalar(
        loader, "SELECT COUNT(*) FROM agg_metrics_hourly_v1 WHERE jsonb_typeof(metric_key) = 'array'"
    )
    assert keys == metrics.num_rows


def test_reloading_an_hour_and_its_day_gives_identical_tables(loader: PostgresLoader) -> None:
    watched = ["fact_events_v1", "fact_orders_v1", "dim_users_v1", "agg_product_daily_v1", "fact_sessions_v1"]
    before = {name: _snapshot(loader, name) for name in watched}
    assert all(before.values())
    first = loader.publish_hour(HOUR)
    second = loader.publish_hour(HOUR)
    assert [(r.table, r.rows) for r in first] == [(r.table, r.rows) for r in second]
    assert {name: _snapshot(loader, name) for name in watched} == before


def test_loads_of_different_hours_run_side_by_side_and_one_hour_queues(
    settings: Settings, loader: PostgresLoader
) -> None:
    """A load of hour A holds its interval (uncommitted); hour B loads meanwhile, a second A waits."""
    table = warehouse_tables()["fact_events_v1"]
    hour_a, hour_b = Interval.containing("hour", HOUR), Interval.containing("hour", HOUR + timedelta(hours=1))
    expected_a = _scalar(loader, f"SELECT COUNT(*) FROM fact_events_v1 WHERE {_between(hour_a)}")
    expected_b = _scalar(loader, f"SELECT COUNT(*) FROM fact_events_v1 WHERE {_between(hour_b)}")
    assert expected_a > 0
    assert expected_b > 0
    with loader.connect() as holder, ThreadPoolExecutor(max_workers=2) as pool:
        for statement in loader._lock_statements(table, hour_a):
            holder.execute(statement)
        holder.execute(f"DELETE FROM fact_events_v1 WHERE {_between(hour_a)}")  # a load of A, halfway
        started = time.monotonic()
        load_b = pool.submit(loader.load, "fact_events_v1", hour_b)
        load_a = pool.submit(loader.load, "fact_events_v1", hour_a)
        assert load_b.result(timeout=30).rows == expected_b
        assert time.monotonic() - started < 10
        time.sleep(0.5)
        assert not load_a.done()  # queued behind the open load of the same hour
        holder.rollback()
        assert load_a.result(timeout=30).rows == expected_a
    assert _scalar(loader, f"SELECT COUNT(*) FROM fact_events_v1 WHERE {_between(hour_a)}") == expected_a
    assert _scalar(loader, f"SELECT COUNT(*) FROM fact_events_v1 WHERE {_between(hour_b)}") == expected_b


def test_concurrent_loads_of_many_hours_and_of_one_hour_never_duplicate(loader: PostgresLoader) -> None:
    before = _snapshot(loader, "fact_events_v1")
    hours = [HOUR + timedelta(hours=h) for h in range(6)] * 2 + [HOUR] * 4
    barrier = threading.Barrier(len(hours))

    def load(hour: datetime) -> int:
        barrier.wait()
        return loader.load("fact_events_v1", at=hour).rows

    with ThreadPoolExecutor(max_workers=len(hours)) as pool:
        rows = list(pool.map(load, hours))
    assert all(r > 0 for r in rows)
    assert _snapshot(loader, "fact_events_v1") == before
    users_before = _snapshot(loader, "dim_users_v1")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda h: loader.load("dim_users_v1", at=h), [HOUR, HOUR + timedelta(hours=1)] * 2))
    assert _snapshot(loader, "dim_users_v1") == users_before


def _between(interval: Interval) -> str:
    start, end = interval.bounds()
    return f"ts >= '{start}' AND ts < '{end}'"


@pytest.fixture
def hour_dir(settings: Settings) -> Iterator[Path]:
    directory = _lake_path(settings, lake_tables()["clean_events"].partition_path(HOUR))
    assert any(directory.glob("*.parquet"))
    added_before = set(directory.iterdir())
    yield directory
    for path in set(directory.iterdir()) - added_before:
        path.unlink()


def _write_like(directory: Path, name: str, **overrides: Any) -> None:
    """A copy of the hour's first file with one row changed (a plausible bad file from a buggy job)."""
    source = pq.read_table(sorted(directory.glob("*.parquet"))[0])
    row = source.slice(0, 1).to_pylist()[0]
    row.update(overrides)
    pq.write_table(pa.Table.from_pylist([row], schema=source.schema), directory / name)


@pytest.mark.parametrize(
    ("bad_file", "message"),
    [
        ("not-parquet", "Parquet"),  # unreadable: fails while staging, before the delete
        ("null-key", "null value"),  # NOT NULL violation: fails in the INSERT, after the delete
        ("wrong-hour", "outside the interval"),  # a row of another hour: refused before the delete
    ],
)
def test_a_failed_load_leaves_the_table_as_it_was(
    loader: PostgresLoader, hour_dir: Path, bad_file: str, message: str
) -> None:
    before = _snapshot(loader, "fact_events_v1")
    if bad_file == "not-parquet":
        (hour_dir / "part-zzz.parquet").write_bytes(b"PAR1 this is not a parquet file")
    elif bad_file == "null-key":
        _write_like(hour_dir, "part-zzz.parquet", event_id=None, user_key=None)
    else:
        _write_like(hour_dir, "part-zzz.parquet", ts=HOUR + timedelta(hours=3))
    with pytest.raises(LoadError, match=message):
        loader.load("fact_events_v1", at=HOUR)
    assert _snapshot(loader, "fact_events_v1") == before


def _normal(value: Any) -> Any:
    if isinstance(value, Decimal | float):
        return round(float(value), 6)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return value


def test_bi_queries_agree_between_the_warehouse_and_duckdb_over_the_lake(
    settings: Settings, loader: PostgresLoader
) -> None:
    params = bi_query_params(START.date(), (START + timedelta(days=DAYS)).date())
    with loader.connect() as conn, DuckDBCatalog(settings, warehouse_views=True) as catalog:
        for name, sql in bi_queries().items():
            postgres = conn.execute(render_one(sql, "postgres", params)).fetchall()
            _, duck = catalog.query(render_one(sql, "duckdb", params))
            assert postgres, name
            assert [tuple(map(_normal, r)) for r in postgres] == [tuple(map(_normal, r)) for r in duck], name
        active = conn.execute(render_one(bi_queries()["active_users"], "postgres", params)).fetchall()
    assert [r[0] for r in active][:DAYS] == [date(2026, 1, 1), date(2026, 1, 2)]


def test_the_sql_command_queries_the_warehouse(
    settings: Settings, loader: PostgresLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdalake.cli import app

    for field, value in {
        "HOME": str(settings.home),
        "WAREHOUSE_PORT": str(settings.warehouse_port),
        "WAREHOUSE_SCHEMA": settings.warehouse_schema,
        "LAKE_URI": settings.lake_uri,
    }.items():
        monkeypatch.setenv(f"LAMBDALAKE_{field}", value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["sql", "--format", "json", "SELECT COUNT(*) AS n FROM fact_orders_v1"]
        )
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.stdout) == [{"n": _scalar(loader, "SELECT COUNT(*) FROM fact_orders_v1")}]
        bad = CliRunner().invoke(app, ["sql", "SELECT * FROM no_such_table"])
        assert isinstance(bad.exception, LambdalakeError)
        assert "no_such_table" in str(bad.exception)
    finally:
        get_settings.cache_clear()


def test_the_schema_is_created_concurrently_without_errors(settings: Settings) -> None:
    other = PostgresLoader(settings.model_copy(update={"warehouse_schema": "test_warehouse_pg_init"}))
    with other.connect() as conn:
        conn.execute("DROP SCHEMA IF EXISTS test_warehouse_pg_init CASCADE")
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda _i: other.ensure_schema(), range(3)))
    with psycopg.connect(settings.warehouse_dsn) as conn:
        count = conn.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'test_warehouse_pg_init'"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DROP SCHEMA test_warehouse_pg_init CASCADE")
    assert count == len(warehouse_tables()) + len(views())
