"""`lambdalake bench warehouse`: load rate into PostgreSQL, BI query latency on PostgreSQL and DuckDB.

Days of generated clickstream become the lake's clean and curated tables (built here with DuckDB
SQL, a fast stand-in for the Spark jobs with the same layout and columns as sql/athena/ declares),
every hour is published into a PostgreSQL of our own on a free port, then each ready BI query of
sql/bi/ runs on the warehouse and on DuckDB over the same Parquet (the Athena stand-in).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench._common import free_port
from lambdalake.settings import Settings
from warehouse.tables import lake_tables

START = datetime(2026, 1, 1, tzinfo=UTC)
BI_RUNS = 30

_EVENTS = """
CREATE TABLE events AS
SELECT
    event_id, event_type, user_id, anonymous_id, COALESCE(user_id, anonymous_id) AS user_key, session_id,
    CAST(ts AS TIMESTAMPTZ) AS ts, CAST(ts AS TIMESTAMPTZ) AS received_at, 1 AS schema_version,
    CAST(properties AS VARCHAR) AS properties, CAST(context AS VARCHAR) AS context,
    'shardId-000000000000' AS shard_id, CAST(ROW_NUMBER() OVER () AS VARCHAR) AS sequence_number,
    CAST(ts AS TIMESTAMPTZ) AS arrival_ts
FROM read_ndjson(?, columns = {
    event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR', anonymous_id: 'VARCHAR',
    session_id: 'VARCHAR', ts: 'VARCHAR', properties: 'JSON', context: 'JSON'})
"""
_ITEM = """'[{"product_id": "VARCHAR", "quantity": "BIGINT", "price": "DOUBLE", "category": "VARCHAR"}]'"""
# Each curated table as the batch layer defines it (spark_jobs/), in DuckDB SQL; columns in file order.
_CURATED: dict[str, str] = {
    "clean_events": "SELECT * FROM events",
    "orders_v1": f"""
        SELECT p.order_id, p.event_id, p.ts, p.user_key, p.user_id, p.session_id, p.currency, p.amount,
            p.payment_method, p.promo_code, CAST(pr.discount_pct AS INTEGER) AS promo_discount_pct,
            pr.promo_code IS NOT NULL AS promo_valid, CAST(len(p.items) AS INTEGER) AS items_count,
            CAST(list_sum([i.quantity FOR i IN p.items]) AS BIGINT) AS units, p.items,
            list_sort(list_distinct([i.category FOR i IN p.items])) AS categories, p.country, p.device
        FROM (
            SELECT event_id, ts, user_key, user_id, session_id, properties ->> 'order_id' AS order_id,
                properties ->> 'currency' AS currency, CAST(properties ->> 'amount' AS DOUBLE) AS amount,
                properties ->> 'payment_method' AS payment_method, properties ->> 'promo_code' AS promo_code,
                from_json(properties -> 'items', {_ITEM}) AS items,
                context ->> 'country' AS country, context ->> 'device' AS device
            FROM events WHERE event_type = 'purchase'
        ) AS p LEFT JOIN promos AS pr ON pr.promo_code = p.promo_code""",
    "sessions_v1": """
        SELECT session_id AS session_key, min(user_key) AS user_key, min(ts) AS session_start,
            max(ts) AS session_end, epoch(max(ts) - min(ts)) AS duration_s, count(*) AS events,
            count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
            count(DISTINCT properties ->> 'path') AS unique_pages,
            bool_or(event_type = 'purchase') AS converted,
            count(*) FILTER (WHERE event_type = 'purchase') AS orders,
            coalesce(sum(CAST(properties ->> 'amount' AS DOUBLE)) FILTER (WHERE event_type = 'purchase'), 0)
                AS revenue
        FROM events GROUP BY session_id""",
    "product_hourly_v1": """
        SELECT date_trunc('hour', ts) AS hour_start, product_id, min(category) AS category,
            count(*) FILTER (WHERE kind = 'view') AS views, count(*) FILTER (WHERE kind = 'cart') AS carts,
            count(*) FILTER (WHERE kind = 'buy') AS purchases, coalesce(sum(units), 0) AS units,
            coalesce(sum(revenue), 0) AS revenue,
            count(*) FILTER (WHERE kind = 'buy')
                / greatest(count(*) FILTER (WHERE kind = 'view'), 1) AS conversion
        FROM product_facts GROUP BY ALL""",
    "product_daily_v1": """
        SELECT CAST(ts AS DATE) AS date, product_id, min(category) AS category,
            count(*) FILTER (WHERE kind = 'view') AS views, count(*) FILTER (WHERE kind = 'cart') AS carts,
            count(*) FILTER (WHERE kind = 'buy') AS purchases, coalesce(sum(units), 0) AS units,
            coalesce(sum(revenue), 0) AS revenue,
            count(*) FILTER (WHERE kind = 'buy')
                / greatest(count(*) FILTER (WHERE kind = 'view'), 1) AS conversion
        FROM product_facts GROUP BY ALL""",
    "category_daily_v1": """
        SELECT CAST(ts AS DATE) AS date, category,
            count(DISTINCT product_id) FILTER (WHERE kind = 'view') AS products_viewed,
            count(*) FILTER (WHERE kind = 'view') AS views, count(*) FILTER (WHERE kind = 'cart') AS carts,
            count(*) FILTER (WHERE kind = 'buy') AS purchases, coalesce(sum(units), 0) AS units,
            coalesce(sum(revenue), 0) AS revenue,
            count(*) FILTER (WHERE kind = 'buy')
                / greatest(count(*) FILTER (WHERE kind = 'view'), 1) AS conversion
        FROM product_facts GROUP BY ALL""",
    "funnel_daily_v1": """
        WITH steps(step, step_index) AS (VALUES ('product_view', 0), ('add_to_cart', 1),
                ('checkout_started', 2), ('purchase', 3)),
            reached AS (
                SELECT CAST(ts AS DATE) AS date, step, step_index, count(DISTINCT session_id) AS sessions
                FROM events JOIN steps ON steps.step = events.event_type GROUP BY ALL)
        SELECT date, step, CAST(step_index AS INTEGER) AS step_index, sessions,
            sessions / lag(sessions) OVER (PARTITION BY date ORDER BY step_index) AS rate_from_previous,
            sessions / first_value(sessions) OVER (PARTITION BY date ORDER BY step_index) AS rate_from_first
        FROM reached""",
    "user_daily_v1": """
        SELECT CAST(ts AS DATE) AS date, user_key, max(user_id) AS user_id, count(*) AS events,
            count(DISTINCT session_id) AS sessions,
            count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
            count(*) FILTER (WHERE event_type = 'product_view') AS product_views,
            count(*) FILTER (WHERE event_type = 'add_to_cart') AS add_to_carts,
            count(*) FILTER (WHERE event_type = 'purchase') AS orders,
            coalesce(sum(CAST(properties ->> 'amount' AS DOUBLE)) FILTER (WHERE event_type = 'purchase'), 0)
                AS revenue, min(ts) AS first_ts, max(ts) AS last_ts
        FROM events GROUP BY ALL""",
    "metrics_hourly_v1": """
        SELECT metric, '1h' AS window, bucket_start, key, item, rank, value FROM metric_values
        WHERE grain = 'hour'""",
    "metrics_daily_v1": """
        SELECT metric, '1d' AS window, bucket_start, key, item, rank, value FROM metric_values
        WHERE grain = 'day'""",
}
_PRODUCT_FACTS = """
CREATE TABLE product_facts AS
SELECT ts, properties ->> 'product_id' AS product_id, properties ->> 'category' AS category,
    CASE event_type WHEN 'product_view' THEN 'view' ELSE 'cart' END AS kind,
    NULL::BIGINT AS units, NULL::DOUBLE AS revenue
FROM events WHERE event_type IN ('product_view', 'add_to_cart')
UNION ALL
SELECT ts, i.product_id, i.category, 'buy', i.quantity, i.quantity * i.price
FROM (SELECT ts, unnest(items) AS i FROM orders_v1)
"""
_METRICS = """
CREATE TABLE metric_values AS
WITH grains(grain) AS (VALUES ('hour'), ('day')),
bucketed AS (SELECT grain, date_trunc(grain, ts) AS bucket_start, * FROM events, grains),
scalar AS (
    SELECT grain, bucket_start, 'page_views' AS metric, CAST(count(*) FILTER (WHERE event_type = 'page_view')
        AS DOUBLE) AS value FROM bucketed GROUP BY ALL
    UNION ALL SELECT grain, bucket_start, 'orders', count(*) FILTER (WHERE event_type = 'purchase')
        FROM bucketed GROUP BY ALL
    UNION ALL SELECT grain, bucket_start, 'revenue',
        coalesce(sum(CAST(properties ->> 'amount' AS DOUBLE)) FILTER (WHERE event_type = 'purchase'), 0)
        FROM bucketed GROUP BY ALL
    UNION ALL SELECT grain, bucket_start, 'active_users', count(DISTINCT user_key) FROM bucketed GROUP BY ALL
    UNION ALL SELECT grain, bucket_start, 'cart_sessions',
        count(DISTINCT session_id) FILTER (WHERE event_type = 'add_to_cart') FROM bucketed GROUP BY ALL
    UNION ALL SELECT grain, bucket_start, 'purchase_sessions',
        count(DISTINCT session_id) FILTER (WHERE event_type = 'purchase') FROM bucketed GROUP BY ALL
),
views AS (
    SELECT grain, bucket_start, properties ->> 'product_id' AS item, count(*) AS value
    FROM bucketed WHERE event_type = 'product_view' GROUP BY ALL
),
ranked AS (
    SELECT *, CAST(row_number() OVER (PARTITION BY grain, bucket_start ORDER BY value DESC, item) AS INTEGER)
        AS rank FROM views
)
SELECT grain, metric, bucket_start, CAST([] AS VARCHAR[]) AS key, NULL::VARCHAR AS item,
    NULL::INTEGER AS rank, value FROM scalar
UNION ALL
SELECT grain, 'trending_products_views', bucket_start, CAST([] AS VARCHAR[]), item, rank,
    CAST(value AS DOUBLE) FROM ranked WHERE rank <= 20
"""


def _partition_sql(grain: str, column: str) -> str:
    parts = {"year": "%Y", "month": "%m", "day": "%d", "hour": "%H"}
    names = ("year", "month", "day", "hour") if grain == "hour" else ("year", "month", "day")
    return ", ".join(f"strftime({column}, '{parts[n]}') AS {n}" for n in names)


def build_lake(
    settings: Settings,
    *,
    events: int,
    start: datetime = START,
    events_per_s: float = 1.0,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, int]:
    """Generate ``events`` clean events from ``start`` and write the lake's clean, curated and reference
    tables (hour/day partitions, layout of sql/athena/) under the settings' local lake; rows per table."""
    from ingest.generator import ClickstreamGenerator, GeneratorConfig

    root = Path(settings.lake_uri.removeprefix("file://"))
    config = GeneratorConfig(
        events=events,
        seed=seed,
        start=start,
        events_per_s=events_per_s,
        duplicate_rate=0.0,
        late_rate=0.0,
        out_of_order_rate=0.0,
        malformed_rate=0.0,
    )
    generator = ClickstreamGenerator(config)
    generator.write_reference(settings)
    with tempfile.TemporaryDirectory() as scratch:
        ndjson = Path(scratch) / "events.ndjson"
        progress(f"generating {events:,} events from {start:%Y-%m-%d}")
        with ndjson.open("wb") as out:
            for line in generator.lines():
                out.write(line + b"\n")
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.execute(_EVENTS, [str(ndjson)])
        promos = root / "reference" / "promos" / "promos.csv"
        con.execute(
            "CREATE TABLE promos AS SELECT * FROM read_csv(?, header = true, all_varchar = true)",
            [str(promos)],
        )
        con.execute("CREATE TABLE orders_v1 AS " + _CURATED["orders_v1"])
        con.execute(_PRODUCT_FACTS)
        con.execute(_METRICS)
        rows: dict[str, int] = {}
        tables = lake_tables()
        for name, query in _CURATED.items():
            table = tables[name]
            time_column = {"sessions_v1": "session_start", "product_hourly_v1": "hour_start"}.get(
                name, "date" if "date" in [c.name for c in table.columns] else "ts"
            )
            if name.startswith("metrics_"):
                time_column = "bucket_start"
            columns = ", ".join(f'"{c.name}"' for c in table.columns)
            target = root / table.location
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            parts = ", ".join(table.partition_columns)
            con.execute(
                f"COPY (SELECT {columns}, {_partition_sql(table.grain, time_column)} FROM ({query})) "
                f"TO '{target}' (FORMAT parquet, PARTITION_BY ({parts}), COMPRESSION zstd)"
            )
            rows[name] = int(con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0])  # type: ignore[index]
        con.close()
    progress("lake: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    return rows


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    from lambdalake.local.services import LocalEngines
    from warehouse.duckdb_catalog import DuckDBCatalog
    from warehouse.postgres import PostgresLoader
    from warehouse.query import bi_query_params
    from warehouse.render import render_one
    from warehouse.tables import bi_queries, warehouse_tables

    days = 3 if quick else 30
    events = 150_000 if quick else 1_500_000
    home = Path(tempfile.mkdtemp(prefix="lambdalake-bench-warehouse-"))
    home.chmod(0o755)
    settings = Settings(_env_file=None, profile="local", home=home, warehouse_port=free_port())  # type: ignore[call-arg]
    local = LocalEngines(settings)
    local.engines = [engine for engine in local.engines if engine.name == "warehouse"]
    try:
        local.up(progress=progress)
        rows = build_lake(settings, events=events, events_per_s=events / (days * 86400), progress=progress)
        loader = PostgresLoader(settings)
        loader.ensure_schema()
        hours = [START + timedelta(hours=h) for h in range(days * 24)]
        hourly = [n for n, t in warehouse_tables().items() if t.grain == "hour"]
        daily = [n for n, t in warehouse_tables().items() if t.grain != "hour"]
        progress(f"loading {len(hours)} hours into PostgreSQL")
        loaded, started = 0, time.perf_counter()
        for hour in hours:
            loaded += sum(r.rows for r in loader.publish_hour(hour, hourly))
            if hour.hour == 23:  # daily tables and dimensions once their day is complete
                loaded += sum(r.rows for r in loader.publish_hour(hour, daily))
        load_s = time.perf_counter() - started
        progress(f"loaded {loaded:,} rows in {load_s:.1f}s")

        params = bi_query_params(START.date(), (START + timedelta(days=days)).date())
        latencies: dict[str, list[float]] = {"postgres": [], "duckdb": []}
        with loader.connect() as conn, DuckDBCatalog(settings, warehouse_views=True) as catalog:
            for name, sql in bi_queries().items():
                for engine in ("postgres", "duckdb"):
                    statement = render_one(sql, engine, params)  # type: ignore[arg-type]
                    for _ in range(BI_RUNS):
                        began = time.perf_counter()
                        if engine == "postgres":
                            conn.execute(statement).fetchall()
                        else:
                            catalog.connection.execute(statement).fetchall()
                        latencies[engine].append((time.perf_counter() - began) * 1000)
                progress(
                    f"{name}: p50 postgres {_percentile(latencies['postgres'][-BI_RUNS:], 0.5):.1f} ms, "
                    f"duckdb {_percentile(latencies['duckdb'][-BI_RUNS:], 0.5):.1f} ms"
                )
        return {
            "days": days,
            "events": rows["clean_events"],
            "rows_loaded": loaded,
            "load_rows_per_s": round(loaded / load_s),
            "bi_p50_ms_postgres": round(_percentile(latencies["postgres"], 0.5), 2),
            "bi_p99_ms_postgres": round(_percentile(latencies["postgres"], 0.99), 2),
            "bi_p50_ms_duckdb": round(_percentile(latencies["duckdb"], 0.5), 2),
            "bi_p99_ms_duckdb": round(_percentile(latencies["duckdb"], 0.99), 2),
        }
    finally:
        local.down(progress=progress)
        shutil.rmtree(home, ignore_errors=True)
