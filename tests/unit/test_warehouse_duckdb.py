"""The local Athena: DuckDB views named like the Glue tables over the lake's files, and `lambdalake sql`."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from bench.warehouse import START, build_lake
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings, get_settings
from warehouse.duckdb_catalog import DuckDBCatalog
from warehouse.query import QueryResult, format_result
from warehouse.tables import lake_tables


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("duckdb-home")
    configured = Settings(
        _env_file=None, profile="local", home=home, lake_uri_override=(home / "lake").as_uri()
    )  # type: ignore[call-arg]
    build_lake(configured, events=3000, events_per_s=3000 / 86400)
    return configured


def test_every_glue_table_is_a_view_with_its_columns_and_partitions(settings: Settings) -> None:
    with DuckDBCatalog(settings) as catalog:
        for name, table in lake_tables().items():
            columns, _ = catalog.query(f"SELECT * FROM {name} LIMIT 0")
            assert columns == [c.name for c in table.columns] + list(table.partition_columns), name
        qualified, rows = catalog.query(f"SELECT COUNT(*) AS n FROM {settings.glue_database}.clean_events")
        assert qualified == ["n"]
        assert rows[0][0] == 3000


def test_views_read_the_same_rows_as_the_files(settings: Settings) -> None:
    root = Path(settings.lake_uri.removeprefix("file://"))
    with DuckDBCatalog(settings) as catalog:
        for name, table in lake_tables().items():
            if table.format != "parquet" or name == "raw_events":
                continue
            expected = ds.dataset(root / table.location, format="parquet", partitioning="hive").count_rows()
            assert catalog.query(f"SELECT COUNT(*) FROM {name}")[1][0][0] == expected, name
        _, hours = catalog.query(
            "SELECT hour, COUNT(*) FROM clean_events WHERE year = '2026' AND day = '01' GROUP BY hour ORDER BY hour"
        )
        assert hours[0][0] == "00"
        assert sum(n for _, n in hours) == 3000
        _, types = catalog.query("SELECT typeof(ts), typeof(properties) FROM clean_events LIMIT 1")
        assert types == [("TIMESTAMP", "VARCHAR")]
        _, promos = catalog.query("SELECT promo_code, discount_pct FROM reference_promos ORDER BY 1 LIMIT 1")
        assert isinstance(promos[0][1], int)


def test_a_table_without_files_is_an_empty_view_with_its_columns(settings: Settings) -> None:
    with DuckDBCatalog(settings) as catalog:
        columns, rows = catalog.query("SELECT * FROM raw_events")
    assert rows == []
    assert columns[:2] == ["event_id", "event_type"]
    assert columns[-1] == "hour"


def test_the_warehouse_mirror_applies_the_warehouse_columns(settings: Settings) -> None:
    with DuckDBCatalog(settings, warehouse_views=True) as catalog:
        columns, rows = catalog.query("SELECT metric_window, item_rank FROM agg_metrics_hourly_v1 LIMIT 1")
        assert columns == ["metric_window", "item_rank"]
        assert rows[0][0] == "1h"
        _, kpis = catalog.query("SELECT event_date, active_users FROM v_daily_kpis ORDER BY 1")
    assert kpis[0][0] == START.date()
    assert kpis[0][1] > 0


def test_formats() -> None:
    result = QueryResult(
        ["day", "n", "revenue", "note"],
        [
            (date(2026, 1, 1), 3, Decimal("10.50"), None),
            (datetime(2026, 1, 2, 5), 12, Decimal("1.00"), "a,b"),
        ],
    )
    table = format_result(result, "table").splitlines()
    assert table[0] == "day                 | n  | revenue | note"
    assert table[2].startswith("2026-01-01          | 3  | 10.50")
    assert table[-1] == "(2 rows)"
    rows = list(csv.reader(io.StringIO(format_result(result, "csv"))))
    assert rows == [
        ["day", "n", "revenue", "note"],
        ["2026-01-01", "3", "10.50", ""],
        ["2026-01-02T05:00:00", "12", "1.00", "a,b"],
    ]
    records = orjson.loads(format_result(result, "json"))
    assert records[0] == {"day": "2026-01-01", "n": 3, "revenue": "10.50", "note": None}


def test_the_sql_command_runs_on_the_local_athena(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lambdalake.cli import app

    monkeypatch.setenv("LAMBDALAKE_HOME", str(settings.home))
    monkeypatch.setenv("LAMBDALAKE_LAKE_URI", settings.lake_uri)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        query = "SELECT event_type, COUNT(*) AS n FROM clean_events GROUP BY 1 ORDER BY 2 DESC, 1"
        as_csv = runner.invoke(app, ["sql", "--engine", "athena", "--format", "csv", query])
        assert as_csv.exit_code == 0, as_csv.output
        lines = as_csv.stdout.splitlines()
        assert lines[0] == "event_type,n"
        assert sum(int(line.split(",")[1]) for line in lines[1:]) == 3000
        script = tmp_path / "q.sql"
        script.write_text("SELECT COUNT(*) AS orders FROM orders_v1")
        from_file = runner.invoke(app, ["sql", "-e", "athena", "--file", str(script), "--format", "json"])
        assert from_file.exit_code == 0, from_file.output
        assert orjson.loads(from_file.stdout)[0]["orders"] > 0
        bad = runner.invoke(app, ["sql", "-e", "athena", "SELECT nope FROM clean_events"])
        assert isinstance(bad.exception, LambdalakeError)  # main() prints it as one error, exit code 1
        assert "nope" in str(bad.exception)
        both = runner.invoke(app, ["sql", "-e", "athena", "--file", str(script), "SELECT 1"])
        assert both.exit_code == 2
    finally:
        get_settings.cache_clear()
