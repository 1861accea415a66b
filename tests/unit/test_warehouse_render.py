"""The one renderer: Redshift SQL in, Redshift / PostgreSQL / DuckDB out."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlglot
from sqlglot import exp

from warehouse.render import bind, literal, render, render_one
from warehouse.tables import warehouse_tables

DDL = """
CREATE TABLE IF NOT EXISTS t_v1 (
    id VARCHAR(36) NOT NULL ENCODE ZSTD,
    ts TIMESTAMP NOT NULL ENCODE RAW,
    doc SUPER,
    amount DECIMAL(14,2) ENCODE AZ64
)
DISTSTYLE KEY
DISTKEY (id)
COMPOUND SORTKEY (ts, id);
"""


def test_postgres_drops_distribution_and_encodings_and_maps_the_sort_key_to_brin() -> None:
    create, index = render(DDL, "postgres")
    upper = create.upper()
    for word in ("DISTSTYLE", "DISTKEY", "SORTKEY", "ENCODE", "SUPER", "ZSTD", "AZ64"):
        assert word not in upper
    assert "DOC JSONB" in upper
    assert "ID VARCHAR(36) NOT NULL" in upper
    assert "AMOUNT DECIMAL(14, 2)" in upper
    assert index == "CREATE INDEX IF NOT EXISTS t_v1_sortkey ON t_v1 USING brin (ts, id)"
    parsed = sqlglot.parse_one(create, read="postgres")
    assert [c.name for c in parsed.find_all(exp.ColumnDef)] == ["id", "ts", "doc", "amount"]


def test_a_non_time_sort_key_becomes_a_btree_index() -> None:
    statements = render(warehouse_tables()["dim_products_v1"].ddl, "postgres")
    assert (
        statements[1]
        == "CREATE INDEX IF NOT EXISTS dim_products_v1_sortkey ON dim_products_v1 USING btree (product_id)"
    )


def test_redshift_keeps_its_storage_clauses() -> None:
    (statement,) = render(DDL, "redshift")
    for clause in ("DISTSTYLE KEY", "DISTKEY(id)", "COMPOUND SORTKEY(ts, id)", "ENCODE ZSTD", "SUPER"):
        assert clause in statement


def test_duckdb_gets_json_for_super_and_no_index() -> None:
    (statement,) = render(DDL, "duckdb")
    assert "doc JSON" in statement
    assert "INDEX" not in statement
    assert "DISTKEY" not in statement


def test_json_path_text_gets_the_cast_postgres_needs() -> None:
    sql = "SELECT JSON_EXTRACT_PATH_TEXT(context, 'country') FROM fact_events_v1"
    assert "CAST(context AS JSON)" in render_one(sql, "postgres")
    assert "context" in render_one(sql, "duckdb")
    assert "CAST(context AS JSON)" not in render_one(sql, "duckdb")


def test_approximate_count_distinct_is_exact_on_postgres() -> None:
    sql = "SELECT APPROXIMATE COUNT(DISTINCT user_key) FROM fact_events_v1"
    assert render_one(sql, "postgres") == "SELECT COUNT(DISTINCT user_key) FROM fact_events_v1"


def test_every_warehouse_table_renders_for_postgres_with_an_index() -> None:
    for name, table in warehouse_tables().items():
        statements = render(table.ddl, "postgres")
        assert len(statements) == 2, name
        assert statements[0].startswith(f"CREATE TABLE IF NOT EXISTS {name} (")


def test_literals_are_typed_and_quoted() -> None:
    assert literal(datetime(2026, 1, 2, 3)) == "TIMESTAMP '2026-01-02 03:00:00'"
    assert literal(date(2026, 1, 2)) == "DATE '2026-01-02'"
    assert literal("it's") == "'it''s'"
    assert (literal(None), literal(True), literal(5)) == ("NULL", "TRUE", "5")
    with pytest.raises(ValueError, match="naive UTC"):
        literal(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(TypeError):
        literal(object())


def test_bind_replaces_every_placeholder_and_refuses_missing_ones() -> None:
    sql = "SELECT 1 FROM t WHERE d >= {start_date} AND d < {end_date} AND n = {name}"
    bound = bind(sql, {"start_date": date(2026, 1, 1), "end_date": date(2026, 1, 2), "name": "x'; DROP"})
    assert (
        bound == "SELECT 1 FROM t WHERE d >= DATE '2026-01-01' AND d < DATE '2026-01-02' AND n = 'x''; DROP'"
    )
    with pytest.raises(KeyError, match="end_date"):
        bind(sql, {"start_date": date(2026, 1, 1), "name": "x"})


def test_bad_sql_is_a_parse_error() -> None:
    with pytest.raises(sqlglot.errors.ParseError):
        render("CREATE TABLE (", "postgres")


def test_rendering_once_per_text_still_binds_each_calls_values() -> None:
    sql = "DELETE FROM t WHERE ts >= {interval_start} AND ts < {interval_end} AND note = {note} AND n = {n}"
    first = {
        "interval_start": datetime(2026, 1, 1, 5),
        "interval_end": datetime(2026, 1, 1, 6),
        "note": "a'b",
        "n": 1,
    }
    second = {"interval_start": date(2026, 2, 1), "interval_end": date(2026, 2, 2), "note": "c", "n": 2}
    assert render_one(sql, "postgres", first) == (
        "DELETE FROM t WHERE ts >= CAST('2026-01-01 05:00:00' AS TIMESTAMP) "
        "AND ts < CAST('2026-01-01 06:00:00' AS TIMESTAMP) AND note = 'a''b' AND n = 1"
    )
    assert render_one(sql, "postgres", second) == (
        "DELETE FROM t WHERE ts >= CAST('2026-02-01' AS DATE) AND ts < CAST('2026-02-02' AS DATE) "
        "AND note = 'c' AND n = 2"
    )
