"""Every statement in sql/ parses (Redshift for the warehouse, Athena/Trino for the lake) and agrees
with its schema.yaml and metadata, and the lake tables agree with the batch layer's column lists."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import sqlglot
from sqlglot import exp

from warehouse import tables as t
from warehouse.render import bind, render

WAREHOUSE = t.warehouse_tables()
LAKE = t.lake_tables()
PARAMS = {"start_date": date(2026, 1, 1), "end_date": date(2026, 1, 8)}
EXPECTED_WAREHOUSE = {
    "fact_events_v1",
    "fact_orders_v1",
    "fact_sessions_v1",
    "dim_products_v1",
    "dim_promos_v1",
    "dim_users_v1",
    "agg_metrics_hourly_v1",
    "agg_product_daily_v1",
    "agg_category_daily_v1",
    "agg_funnel_daily_v1",
    "user_daily_facts_v1",
}


def _create(sql: str, dialect: str) -> exp.Create:
    statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    assert len(statements) == 1
    create = statements[0]
    assert isinstance(create, exp.Create)
    return create


def _normal_type(kind: exp.DataType, dialect: str) -> str:
    return kind.sql(dialect).replace(" ", "").lower()


def test_every_table_the_issue_names_exists() -> None:
    assert set(WAREHOUSE) >= EXPECTED_WAREHOUSE
    assert {"raw_events", "clean_events"} <= set(LAKE)


@pytest.mark.parametrize("name", sorted(WAREHOUSE))
def test_warehouse_ddl_parses_and_matches_schema_yaml(name: str) -> None:
    table = WAREHOUSE[name]
    create = _create(table.ddl, "redshift")
    assert create.this.this.name == name
    defs = list(create.find_all(exp.ColumnDef))
    assert [d.name for d in defs] == [c.name for c in table.columns]
    for definition, column in zip(defs, table.columns, strict=True):
        declared = exp.DataType.build(column.type, dialect="redshift")
        assert _normal_type(definition.kind, "redshift") == _normal_type(declared, "redshift"), column.name
        not_null = any(isinstance(c.kind, exp.NotNullColumnConstraint) for c in definition.constraints)
        assert not_null == column.required, column.name
    assert set(table.unique_key) <= {c.name for c in table.columns}


@pytest.mark.parametrize("name", sorted(WAREHOUSE))
def test_distribution_and_sort_keys_name_real_columns(name: str) -> None:
    table = WAREHOUSE[name]
    create = _create(table.ddl, "redshift")
    props = create.args["properties"].expressions
    columns = {c.name for c in table.columns}
    sort = next(p for p in props if isinstance(p, exp.SortKeyProperty))
    sort_columns = [k.name for k in sort.this]
    assert set(sort_columns) <= columns
    dist_style = next(p for p in props if isinstance(p, exp.DistStyleProperty)).this.name
    dist_keys = [p.this.name for p in props if isinstance(p, exp.DistKeyProperty)]
    assert dist_style in {"KEY", "ALL", "EVEN", "AUTO"}
    assert (dist_style == "KEY") == bool(dist_keys)
    assert set(dist_keys) <= columns
    if table.interval_column is not None:
        # Deleting an interval must be a range scan on the leading sort key (zone maps).
        assert sort_columns[0] == table.interval_column


@pytest.mark.parametrize("name", sorted(n for n, w in WAREHOUSE.items() if w.source is not None))
def test_column_sources_read_only_the_lake_tables_columns(name: str) -> None:
    table = WAREHOUSE[name]
    assert table.source is not None
    lake_columns = {c.name for c in table.source.columns}
    for column in table.columns:
        parsed = sqlglot.parse_one(column.source_sql, read="redshift")
        referenced = {c.name for c in parsed.find_all(exp.Column)} or {parsed.name}
        assert referenced <= lake_columns, (column.name, referenced - lake_columns)
    if table.interval_column is not None:
        assert table.grain in ("hour", "day")
        assert table.source.grain in ("hour", "day")


def test_derived_table_merge_parses_with_bound_interval() -> None:
    users = WAREHOUSE["dim_users_v1"]
    assert users.merge_sql is not None
    assert list(WAREHOUSE).index("dim_users_v1") > list(WAREHOUSE).index("fact_events_v1")
    params = {"interval_start": datetime(2026, 1, 1, 5), "interval_end": datetime(2026, 1, 1, 6)}
    statements = sqlglot.parse(bind(users.merge_sql, params), read="redshift")
    assert [type(s) for s in statements] == [exp.Delete, exp.Insert]
    for dialect in ("postgres", "duckdb"):
        assert len(render(users.merge_sql, dialect, params)) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(t.views()))
def test_views_parse_and_render_for_every_engine(name: str) -> None:
    view = t.views()[name]
    create = _create(view.sql, "redshift")
    assert create.kind == "VIEW"
    assert create.this.name == name
    assert name.startswith("v_")
    assert "_v1" not in name
    read = {tb.name for tb in create.find_all(exp.Table)} - {name}
    assert read <= set(WAREHOUSE), read
    for dialect in ("postgres", "duckdb"):
        assert len(render(view.sql, dialect)) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(t.bi_queries()))
def test_bi_queries_take_the_interval_as_parameters(name: str) -> None:
    sql = t.bi_queries()[name]
    assert "{start_date}" in sql
    assert "{end_date}" in sql
    assert "current_date" not in sql.lower()
    assert "getdate" not in sql.lower()
    with pytest.raises(KeyError):
        bind(sql, {})
    statement = sqlglot.parse_one(bind(sql, PARAMS), read="redshift")
    assert isinstance(statement, exp.Select)
    assert {tb.name for tb in statement.find_all(exp.Table)} <= set(t.views()) | set(WAREHOUSE)


@pytest.mark.parametrize("name", sorted(LAKE))
def test_athena_ddl_parses_and_matches_schema_yaml(name: str) -> None:
    table = LAKE[name]
    ddl = table.ddl.replace("{lake_uri}", "s3://lake-bucket")
    create = _create(ddl, "athena")
    assert create.this.this.name == name
    assert isinstance(_create(ddl, "hive"), exp.Create)  # Athena DDL is Hive DDL
    props = create.args["properties"].expressions
    assert any(isinstance(p, exp.ExternalProperty) for p in props)
    location = next(p for p in props if isinstance(p, exp.LocationProperty)).this.name
    assert location == f"s3://lake-bucket/{table.location}/"
    partitions = next((p for p in props if isinstance(p, exp.PartitionedByProperty)), None)
    partition_names = [c.name for c in partitions.this.expressions] if partitions else []
    assert partition_names == list(table.partition_columns)
    defs = [d for d in create.this.expressions if isinstance(d, exp.ColumnDef)]
    assert [d.name for d in defs] == [c.name for c in table.columns]
    for definition, column in zip(defs, table.columns, strict=True):
        declared = exp.DataType.build(column.type, dialect="hive")
        assert _normal_type(definition.kind, "hive") == _normal_type(declared, "hive"), column.name
    fmt = "PARQUET" if table.format == "parquet" else "TEXTFILE"
    assert fmt in ddl


def test_an_athena_query_over_the_partitions_parses_with_trino() -> None:
    query = "SELECT event_type, count(*) FROM clean_events WHERE year = '2026' AND hour = '05' GROUP BY 1"
    statement = sqlglot.parse_one(query, read="trino")
    assert statement.find(exp.Table).name == "clean_events"  # type: ignore[union-attr]


def test_lake_tables_agree_with_the_batch_layer_and_delivery_columns() -> None:
    """Drift between spark_jobs/ (or the delivery) and sql/athena/ fails here, not in a load at 3 a.m."""
    from ingest.delivery.schema import RAW_SCHEMA
    from spark_jobs import schemas

    spark = {
        "clean_events": schemas.CLEAN_COLUMNS,
        "metrics_hourly_v1": schemas.METRIC_COLUMNS,
        "metrics_daily_v1": schemas.METRIC_COLUMNS,
        "product_hourly_v1": schemas.PRODUCT_HOURLY_COLUMNS,
        "product_daily_v1": schemas.PRODUCT_DAILY_COLUMNS,
        "category_daily_v1": schemas.CATEGORY_DAILY_COLUMNS,
        "funnel_daily_v1": schemas.FUNNEL_DAILY_COLUMNS,
        "user_daily_v1": schemas.USER_DAILY_COLUMNS,
        "sessions_v1": schemas.SESSION_COLUMNS,
        "orders_v1": schemas.ORDER_COLUMNS,
    }
    for name, columns in spark.items():
        table = LAKE[name]
        file_columns = [c for c in columns if c not in table.partition_columns]
        partitions = [c for c in columns if c in ("year", "month", "day", "hour")]
        assert [c.name for c in table.columns] == file_columns, name
        assert partitions in ([], list(table.partition_columns)), name
        assert table.location == f"{schemas.CURATED}/{name}" or name == "clean_events"
    assert LAKE["clean_events"].location == schemas.CLEAN_EVENTS
    assert LAKE["raw_events"].location == schemas.RAW_EVENTS
    assert [c.name for c in LAKE["raw_events"].columns] == RAW_SCHEMA.names


def test_intervals_are_half_open_hours_and_days() -> None:
    moment = datetime(2026, 3, 9, 23, 59, 59, tzinfo=UTC)
    hour = t.Interval.containing("hour", moment)
    day = t.Interval.containing("day", moment)
    assert hour.bounds() == (datetime(2026, 3, 9, 23), datetime(2026, 3, 10, 0))
    assert day.bounds() == (date(2026, 3, 9), date(2026, 3, 10))
    assert (hour.label, day.label) == ("2026-03-09T23", "2026-03-09")
    orders = LAKE["orders_v1"]
    assert orders.interval_prefix(hour) == "curated/orders_v1/year=2026/month=03/day=09/hour=23"
    assert orders.interval_prefix(day) == "curated/orders_v1/year=2026/month=03/day=09"
    assert LAKE["sessions_v1"].partition_path(moment) == "curated/sessions_v1/year=2026/month=03/day=09"
    with pytest.raises(Exception, match="partitioned by day"):
        LAKE["sessions_v1"].interval_prefix(hour)
