"""Entry points: run the batch layer over an interval of hours, many hours per Spark job.

A backfill of months is a handful of Spark jobs in one JVM, not one per hour: the interval is cut
into chunks of ``batch_hours_per_job`` hours, oldest first (cross-hour dedupe looks back at the
clean partitions the previous chunk wrote). Each step replaces the partitions of its interval.

    python -m spark_jobs.run --from 2026-01-01T00 --to 2026-01-02T00 [--lake-uri file:///…] [--daily]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lambdalake.lake import REFERENCE_PRODUCTS, REFERENCE_PROMOS, join
from lambdalake.metrics.catalogue import Catalogue, load_catalogue
from lambdalake.settings import Settings, get_settings
from spark_jobs import aggregates, compile_metrics, io, orders, sessionize
from spark_jobs.clean_events import clean_events
from spark_jobs.schemas import (
    CATEGORY_DAILY,
    CLEAN_EVENTS,
    CURATED,
    DAY_PARTITION,
    ERRORS_CLEAN,
    FUNNEL_DAILY,
    HOUR_PARTITION,
    METRICS_DAILY,
    METRICS_HOURLY,
    ORDERS,
    PRODUCT_DAILY,
    PRODUCT_HOURLY,
    PRODUCTS_CSV_SCHEMA,
    PROMOS_CSV_SCHEMA,
    SESSIONS,
    USER_DAILY,
)
from spark_jobs.session import spark_session

Progress = Callable[[str], None]
DAY = timedelta(days=1)
SESSION_MARGIN = timedelta(hours=12)


def curated(lake_uri: str, table: str) -> str:
    return join(lake_uri, CURATED, table)


def _partitioned(frame: DataFrame, ts_column: str, names: Sequence[str]) -> DataFrame:
    formats = {"year": "yyyy", "month": "MM", "day": "dd", "hour": "HH"}
    return frame.select("*", *[F.date_format(ts_column, formats[n]).alias(n) for n in names])


def _metric_values(
    events: DataFrame,
    catalogue: Catalogue,
    grain: compile_metrics.Grain,
    context: DataFrame | None = None,
    hours: Sequence[datetime] | None = None,
) -> DataFrame:
    """The catalogue's values; contributions are cached because two branches of the plan read them."""
    contributed = compile_metrics.contributions(
        events, compile_metrics.batch_metrics(catalogue), grain, context, hours
    )
    return compile_metrics.aggregate_contributions(contributed.persist())


def clean_hours(
    spark: SparkSession, lake_uri: str, interval: Sequence[datetime], lookback_hours: int
) -> None:
    """raw → clean and errors for the hours; earlier clean hours within the lookback dedupe them."""
    clean_root, errors_root = join(lake_uri, CLEAN_EVENTS), join(lake_uri, ERRORS_CLEAN)
    before = io.hours(interval[0] - timedelta(hours=lookback_hours), interval[0])
    prior = io.read_hours(spark, clean_root, before)
    if prior is None:
        prior = spark.createDataFrame([], "event_id string, ts timestamp")
    raw = io.read_raw(spark, lake_uri, interval).persist()
    clean, errors = clean_events(raw, prior.select("event_id", "ts"), lookback_hours)
    io.write_partitions(
        clean, clean_root, HOUR_PARTITION, [io.hour_path(clean_root, h) for h in interval], ["ts", "event_id"]
    )
    io.write_partitions(
        errors,
        errors_root,
        HOUR_PARTITION,
        [io.hour_path(errors_root, h) for h in interval],
        ["source_file", "event_id"],
    )
    raw.unpersist()


def reference(spark: SparkSession, lake_uri: str) -> tuple[DataFrame, DataFrame]:
    """Products and promos from the lake's reference zone (empty when not loaded yet)."""
    frames = []
    for path, schema in ((REFERENCE_PRODUCTS, PRODUCTS_CSV_SCHEMA), (REFERENCE_PROMOS, PROMOS_CSV_SCHEMA)):
        uri = join(lake_uri, path)
        if io.existing(spark, [uri]):
            frames.append(spark.read.csv(uri, header=True, schema=schema))
        else:
            frames.append(spark.createDataFrame([], schema))
    return frames[0], frames[1]


def hourly_tables(
    spark: SparkSession, lake_uri: str, interval: Sequence[datetime], catalogue: Catalogue
) -> None:
    """clean → curated hourly tables: catalogue metrics, products, orders."""
    clean = io.read_hours(spark, join(lake_uri, CLEAN_EVENTS), interval)
    if clean is None:
        return
    events = clean.persist()
    # stagger windows of these hours depend on the clean events of the hours around them
    context = io.read_hours(
        spark, join(lake_uri, CLEAN_EVENTS), compile_metrics.stagger_context_hours(catalogue, interval)
    )
    values = _metric_values(events, catalogue, "hour", context, interval)
    metrics = _partitioned(values, "bucket_start", HOUR_PARTITION)
    products, promos = reference(spark, lake_uri)
    outputs = (
        (METRICS_HOURLY, metrics, ["metric", "window", "bucket_start", "key", "rank", "item"]),
        (PRODUCT_HOURLY, aggregates.product_hourly(events), ["product_id"]),
        (ORDERS, orders.orders(events, products, promos), ["ts", "order_id", "event_id"]),
    )
    for table, frame, order in outputs:
        root = curated(lake_uri, table)
        io.write_partitions(frame, root, HOUR_PARTITION, [io.hour_path(root, h) for h in interval], order)
    spark.catalog.clearCache()  # this chunk's events and contributions


def daily_tables(spark: SparkSession, lake_uri: str, days: Sequence[datetime], catalogue: Catalogue) -> None:
    """clean → curated daily tables and sessions for whole UTC days."""
    clean_root = join(lake_uri, CLEAN_EVENTS)
    day_hours = [h for d in days for h in io.hours(d, d + DAY)]
    clean = io.read_hours(spark, clean_root, day_hours)
    if clean is None:
        return
    events = clean.persist()
    metrics = _partitioned(_metric_values(events, catalogue, "day"), "bucket_start", DAY_PARTITION)
    margin = io.hours(days[0] - SESSION_MARGIN, days[0]) + io.hours(
        days[-1] + DAY, days[-1] + DAY + SESSION_MARGIN
    )
    around = io.read_hours(spark, clean_root, margin)
    session_events = events if around is None else events.unionByName(around)
    day_names = {f"{d:%Y-%m-%d}" for d in days}
    sessions = sessionize.sessionize(session_events).where(
        F.date_format("session_start", "yyyy-MM-dd").isin(*day_names)
    )
    outputs = (
        (METRICS_DAILY, metrics, ["metric", "window", "bucket_start", "key", "rank", "item"]),
        (PRODUCT_DAILY, aggregates.product_daily(events), ["product_id"]),
        (CATEGORY_DAILY, aggregates.category_daily(events), ["category"]),
        (FUNNEL_DAILY, aggregates.funnel_daily(events), ["step_index"]),
        (USER_DAILY, aggregates.user_daily(events), ["user_key"]),
        (SESSIONS, sessions, ["user_key", "session_start"]),
    )
    for table, frame, order in outputs:
        root = curated(lake_uri, table)
        io.write_partitions(frame, root, DAY_PARTITION, [io.day_path(root, d) for d in days], order)
    spark.catalog.clearCache()  # this chunk's events and contributions


def chunks(interval: Sequence[datetime], size: int) -> list[Sequence[datetime]]:
    return [interval[i : i + size] for i in range(0, len(interval), size)]


def run(
    spark: SparkSession,
    lake_uri: str,
    start: datetime,
    end: datetime,
    settings: Settings,
    daily: bool = False,
    progress: Progress = lambda _msg: None,
    hours: Sequence[datetime] | None = None,
) -> None:
    """The hourly pipeline (and the daily one for the whole days touched) over [start, end), or
    over only ``hours`` of it: the hours between them are neither read nor rewritten (the caller
    leaves out only hours without data, so dedupe across the gaps loses nothing)."""
    catalogue = load_catalogue(settings.metric_catalogues)
    interval = io.hours(start, end)
    if hours is not None:
        wanted = set(hours)
        interval = [h for h in interval if h in wanted]
    for chunk in chunks(interval, settings.batch_hours_per_job):
        progress(f"clean {chunk[0]:%Y-%m-%dT%H} .. {chunk[-1]:%Y-%m-%dT%H} ({len(chunk)} hours)")
        clean_hours(spark, lake_uri, chunk, settings.batch_dedupe_lookback_hours)
        progress(f"hourly tables {chunk[0]:%Y-%m-%dT%H} .. {chunk[-1]:%Y-%m-%dT%H}")
        hourly_tables(spark, lake_uri, chunk, catalogue)
    if daily and interval:
        days = sorted({h.replace(hour=0) for h in interval})
        for chunk in chunks(days, max(1, settings.batch_hours_per_job // 24)):
            progress(f"daily tables {chunk[0]:%Y-%m-%d} .. {chunk[-1]:%Y-%m-%d} ({len(chunk)} days)")
            daily_tables(spark, lake_uri, chunk, catalogue)


def _hour(text: str) -> datetime:
    return datetime.fromisoformat(text if len(text) > 13 else f"{text}:00").replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from", dest="start", required=True, type=_hour, help="First hour, e.g. 2026-01-01T00."
    )
    parser.add_argument("--to", dest="end", required=True, type=_hour, help="End hour (exclusive).")
    parser.add_argument("--lake-uri", default=None, help="Default: the settings' lake URI.")
    parser.add_argument("--daily", action="store_true", help="Also the daily tables of the days touched.")
    args = parser.parse_args(argv)
    settings = get_settings()
    spark = spark_session(settings)
    run(spark, args.lake_uri or settings.lake_uri, args.start, args.end, settings, args.daily, print)


if __name__ == "__main__":
    main()
