"""The Redshift loader's SQL, checked statement by statement against a recording connection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from lambdalake.settings import Settings
from warehouse.loader import LoadError, interval_params, merge_sql, stage_ddl
from warehouse.redshift import RedshiftLoader
from warehouse.render import bind
from warehouse.tables import Interval, warehouse_table

ROLE = "arn:aws:iam::123456789012:role/lambdalake-redshift-copy"
HOUR = datetime(2026, 1, 1, 5, tzinfo=UTC)


class RecordingCursor:
    def __init__(self, log: list[str], copied: int, fail_on: str | None) -> None:
        self.log, self.copied, self.fail_on = log, copied, fail_on
        self.rowcount = -1
        self._result: tuple[int] = (0,)

    def execute(self, sql: str) -> None:
        self.log.append(sql)
        if self.fail_on and sql.startswith(self.fail_on):
            raise RuntimeError("Serializable isolation violation on table")
        self._result = (self.copied,) if "pg_last_copy_count" in sql else (0,)

    def fetchone(self) -> tuple[int]:
        return self._result


class RecordingConnection:
    def __init__(self, copied: int = 42, fail_on: str | None = None) -> None:
        self.log: list[str] = []
        self.copied, self.fail_on = copied, fail_on
        self.committed = self.rolled_back = 0

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self.log, self.copied, self.fail_on)

    def commit(self) -> None:
        self.committed += 1

    def rollback(self) -> None:
        self.rolled_back += 1

    def __enter__(self) -> RecordingConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        profile="aws",
        home=tmp_path,
        lake_uri_override=(tmp_path / "lake").as_uri(),
        redshift_iam_role_arn=ROLE,
    )


def _write(settings: Settings, relative: str, size: int) -> None:
    path = Path(settings.lake_uri.removeprefix("file://")) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_copy_reads_a_manifest_with_the_role_as_parquet(settings: Settings) -> None:
    loader = RedshiftLoader(settings)
    table = warehouse_table("fact_orders_v1")
    sql = loader.copy_sql(table, "s3://lake/manifests/redshift/fact_orders_v1/2026-01-01T05.json")
    assert sql == (
        "COPY stage_fact_orders_v1 FROM 's3://lake/manifests/redshift/fact_orders_v1/2026-01-01T05.json' "
        f"IAM_ROLE '{ROLE}' FORMAT AS PARQUET SERIALIZETOJSON MANIFEST"
    )
    assert isinstance(sqlglot.parse_one(sql, read="redshift"), exp.Copy)
    csv = loader.copy_sql(warehouse_table("dim_promos_v1"), "s3://lake/m.json")
    assert "FORMAT AS CSV IGNOREHEADER 1 EMPTYASNULL MANIFEST" in csv


def test_copy_without_a_role_is_refused(settings: Settings) -> None:
    loader = RedshiftLoader(settings.model_copy(update={"redshift_iam_role_arn": None}))
    with pytest.raises(Exception, match="REDSHIFT_IAM_ROLE_ARN"):
        loader.copy_sql(warehouse_table("fact_orders_v1"), "s3://lake/m.json")


def test_staging_columns_are_the_files_columns_in_file_order() -> None:
    table = warehouse_table("fact_orders_v1")
    create = sqlglot.parse_one(stage_ddl(table), read="redshift")
    assert table.source is not None
    assert [c.name for c in create.find_all(exp.ColumnDef)] == [c.name for c in table.source.columns]
    types = {c.name: c.kind.sql("redshift") for c in create.find_all(exp.ColumnDef)}
    assert types["items"] == "SUPER"
    assert types["ts"] == "TIMESTAMP"
    assert types["amount"] == "DOUBLE PRECISION"


def test_merge_deletes_exactly_the_interval_then_inserts_the_staged_rows() -> None:
    table = warehouse_table("fact_orders_v1")
    interval = Interval.containing("hour", HOUR)
    delete, insert = sqlglot.parse(
        bind(merge_sql(table, interval), interval_params(interval)), read="redshift"
    )
    assert isinstance(delete, exp.Delete)
    assert isinstance(insert, exp.Insert)
    assert delete.sql("redshift") == (
        "DELETE FROM fact_orders_v1 WHERE ts >= CAST('2026-01-01 05:00:00' AS TIMESTAMP) "
        "AND ts < CAST('2026-01-01 06:00:00' AS TIMESTAMP)"
    )
    assert insert.this.this.name == "fact_orders_v1"
    assert [c.name for c in insert.this.expressions] == [c.name for c in table.columns]
    assert insert.expression.find(exp.Table).name == "stage_fact_orders_v1"  # type: ignore[union-attr]
    full = merge_sql(warehouse_table("dim_products_v1"), Interval("full"))
    assert full.startswith("DELETE FROM dim_products_v1;\n")


def test_a_load_is_one_transaction_in_the_right_order(settings: Settings) -> None:
    _write(settings, "curated/orders_v1/year=2026/month=01/day=01/hour=05/part-0.parquet", 1000)
    _write(settings, "curated/orders_v1/year=2026/month=01/day=01/hour=05/part-1.parquet", 2000)
    _write(settings, "curated/orders_v1/year=2026/month=01/day=01/hour=05/_SUCCESS", 0)
    _write(settings, "curated/orders_v1/year=2026/month=01/day=01/hour=06/part-0.parquet", 5)
    conn = RecordingConnection(copied=42)
    result = RedshiftLoader(settings).load("fact_orders_v1", at=HOUR, conn=conn)
    assert (result.rows, result.files, result.interval) == (42, 2, "2026-01-01T05")
    kinds = [s.split()[0].upper() for s in conn.log]
    assert kinds == ["DROP", "CREATE", "COPY", "SELECT", "SELECT", "LOCK", "DELETE", "INSERT"]
    assert conn.log[5] == "LOCK fact_orders_v1"
    assert "NOT (ts >= CAST('2026-01-01 05:00:00' AS TIMESTAMP)" in conn.log[4]
    assert (conn.committed, conn.rolled_back) == (1, 0)
    for statement in conn.log:
        assert sqlglot.parse_one(statement, read="redshift") is not None
    manifest_path = Path(settings.lake_uri.removeprefix("file://")) / (
        "manifests/redshift/fact_orders_v1/2026-01-01T05.json"
    )
    manifest = json.loads(manifest_path.read_text())
    assert [(e["url"].rsplit("/", 1)[-1], e["meta"]["content_length"]) for e in manifest["entries"]] == [
        ("part-0.parquet", 1000),
        ("part-1.parquet", 2000),
    ]
    assert all(e["mandatory"] for e in manifest["entries"])
    assert manifest_path.as_uri() in conn.log[2]


def test_a_failing_merge_is_rolled_back_and_reported(settings: Settings) -> None:
    _write(settings, "curated/orders_v1/year=2026/month=01/day=01/hour=05/part-0.parquet", 10)
    conn = RecordingConnection(fail_on="INSERT")
    with pytest.raises(LoadError, match="rolled back: Serializable isolation violation"):
        RedshiftLoader(settings).load("fact_orders_v1", at=HOUR, conn=conn)
    assert (conn.committed, conn.rolled_back) == (0, 1)
    assert conn.log[-1].startswith("INSERT")


def test_an_hour_without_files_copies_nothing_and_empties_the_interval(settings: Settings) -> None:
    conn = RecordingConnection()
    result = RedshiftLoader(settings).load("fact_orders_v1", at=HOUR, conn=conn)
    assert result.rows == 0
    assert result.files == 0
    assert not any(s.startswith("COPY") for s in conn.log)
    assert any(s.startswith("DELETE FROM fact_orders_v1 WHERE") for s in conn.log)
    assert conn.committed == 1


def test_a_derived_table_runs_its_merge_under_a_table_lock(settings: Settings) -> None:
    conn = RecordingConnection()
    RedshiftLoader(settings).load("dim_users_v1", at=HOUR, conn=conn)
    assert [s.split()[0] for s in conn.log] == ["LOCK", "DELETE", "INSERT"]
    assert "JSON_EXTRACT_PATH_TEXT(e.context, 'country')" in conn.log[2]


def test_daily_tables_refuse_an_hourly_interval(settings: Settings) -> None:
    with pytest.raises(ValueError, match="per day"):
        RedshiftLoader(settings).load("fact_sessions_v1", Interval.containing("hour", HOUR))
