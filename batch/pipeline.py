"""The hourly batch pipeline as functions of an interval: what the DAG tasks and ``lambdalake batch`` call.

For each hour: mark it reprocessing → Spark (raw → clean → hourly tables; many hours per job) →
gates → warehouse load of the hour's tables + lake partitions (Glue on aws, DuckDB views locally)
→ mark it published with its manifest version. Only hours whose raw manifest exists are processed;
an hour whose manifest version is newer than its published one (late data) is reprocessed. An hour
with no manifest while a later hour has one is closed and empty: it is published as version 0 (so
the watermark can pass it) and processed for real if a manifest ever appears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from batch import gates
from batch.watermark import Watermark, hour_start
from ingest.delivery.layout import MANIFEST_NAME, RAW_EVENTS
from ingest.delivery.manifest import read_manifest
from lambdalake import lake
from lambdalake.settings import Settings

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
HOUR = timedelta(hours=1)
EMPTY_VERSION = 0
GATE_CHUNK_HOURS = 168  # hours gated together by process_hours (a week of a backfill)


@dataclass
class HourPlan:
    hour: datetime
    state: str  # "process", "empty", "current" (published version up to date), "open" (not closed)
    version: int | None = None
    rows: int = 0


@dataclass
class BatchReport:
    processed: list[datetime] = field(default_factory=list)
    empty: list[datetime] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)
    waiting: list[datetime] = field(default_factory=list)
    watermark: datetime | None = None


def hours(start: datetime, end: datetime) -> list[datetime]:
    out, hour = [], hour_start(start)
    while hour < end:
        out.append(hour)
        hour += HOUR
    return out


def hourly_warehouse_tables() -> list[str]:
    from warehouse.tables import warehouse_tables

    return [name for name, table in warehouse_tables().items() if table.grain == "hour"]


def daily_warehouse_tables() -> list[str]:
    from warehouse.tables import warehouse_tables

    return [name for name, table in warehouse_tables().items() if table.grain == "day"]


def closed_later(settings: Settings, hour: datetime) -> bool:
    """Whether a later hour within the horizon has a manifest (so this one, without, is closed)."""
    horizon = hour + timedelta(hours=settings.batch_empty_hour_horizon_hours)
    day = hour.replace(hour=0)
    while day <= horizon:
        prefix = lake.join(settings.lake_uri, RAW_EVENTS, f"year={day:%Y}/month={day:%m}/day={day:%d}")
        for uri, _size in lake.list_files(prefix + "/", settings):
            if uri.endswith("/" + MANIFEST_NAME):
                found = _hour_of(uri)
                if found is not None and hour < found <= horizon:
                    return True
        day += timedelta(days=1)
    return False


def _hour_of(uri: str) -> datetime | None:
    from ingest.delivery.layout import parse_hour_partition

    return parse_hour_partition(uri)


def manifest_state(settings: Settings, hour: datetime) -> tuple[str, dict[str, Any] | None]:
    """``ready`` (manifest), ``empty`` (closed without data) or ``open``: what the sensor waits for."""
    manifest = read_manifest(settings, hour)
    if manifest is not None:
        return "ready", manifest
    return ("empty" if closed_later(settings, hour) else "open"), None


def plan_hour(settings: Settings, hour: datetime, store: Watermark, force: bool = False) -> HourPlan:
    hour = hour_start(hour)
    state, manifest = manifest_state(settings, hour)
    published = store.published_version(hour)
    if state == "open":
        return HourPlan(hour, "open")
    if state == "empty":
        return HourPlan(hour, "current" if published is not None and not force else "empty", EMPTY_VERSION)
    assert manifest is not None
    version, rows = int(manifest.get("version", 1)), int(manifest.get("rows", 0))
    if published is not None and published >= version and not force:
        return HourPlan(hour, "current", version, rows)
    return HourPlan(hour, "process", version, rows)


# --- steps: each is one DAG task over its data interval -----------------------------------------


def spark_for(settings: Settings) -> Any:
    from spark_jobs.session import spark_session

    return spark_session(settings)


def clean_step(settings: Settings, interval: Sequence[datetime], spark: Any = None) -> None:
    from spark_jobs.run import clean_hours

    clean_hours(
        spark or spark_for(settings), settings.lake_uri, list(interval), settings.batch_dedupe_lookback_hours
    )


def aggregates_step(settings: Settings, interval: Sequence[datetime], spark: Any = None) -> None:
    from lambdalake.metrics.catalogue import load_catalogue
    from spark_jobs.run import hourly_tables

    catalogue = load_catalogue(settings.metric_catalogues)
    hourly_tables(spark or spark_for(settings), settings.lake_uri, list(interval), catalogue)


def publish_step(settings: Settings, hour: datetime, loader: Any = None) -> int:
    """The hour's warehouse tables (staging + merge, idempotent) and its lake partitions; a caller
    publishing many hours passes one ``loader`` whose schema it ensured once."""
    from warehouse.query import warehouse_loader

    if loader is None:
        loader = warehouse_loader(settings)
        loader.ensure_schema()
    results = loader.publish_hour(hour, hourly_warehouse_tables())
    register_partitions(settings, hour)
    rows = sum(r.rows for r in results)
    log.info("published %s: %s", f"{hour:%Y-%m-%dT%H}", ", ".join(f"{r.table} {r.rows}" for r in results))
    return rows


def register_partitions(settings: Settings, hour: datetime) -> None:
    """Glue partitions on aws; locally DuckDB views glob the lake, so there is nothing to register."""
    if settings.is_local:
        return
    from warehouse.athena import GlueCatalog

    GlueCatalog(settings).register_partitions(hour)


# --- the whole pipeline over an interval (CLI and backfills) -------------------------------------


def spark_passes(plans: Sequence[HourPlan]) -> list[list[datetime]]:
    """The hours to process, grouped into Spark passes: a pass runs on over hours that closed with
    no data (nothing to read or write there), so a sparse history of quiet nights and weekends is a
    few passes, not one per busy stretch (each pass costs ≈25 s of fixed Spark work). A pass stops at
    an hour that is up to date or still open: the dedupe lookback reads earlier clean hours only
    before a pass, so an hour kept as it is must not sit inside one."""
    out: list[list[datetime]] = []
    current: list[datetime] = []
    for plan in sorted(plans, key=lambda p: p.hour):
        if plan.state == "process":
            current.append(plan.hour)
        elif plan.state != "empty" and current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def process_hours(
    settings: Settings,
    start: datetime,
    end: datetime,
    progress: Progress = lambda _msg: None,
    force: bool = False,
    spark: Any = None,
) -> BatchReport:
    """Bring the hours of [start, end) up to date in the lake, the warehouse and the watermark.

    Gates run for every processed hour before anything is published: one failure raises
    ``GateFailed`` and no hour of the call is published (each stays marked reprocessing)."""
    start, end = hour_start(start), end.astimezone(UTC)
    store = Watermark(settings)
    store.ensure()
    report = BatchReport()
    plans = [plan_hour(settings, h, store, force) for h in hours(start, end)]
    todo = [p for p in plans if p.state == "process"]
    report.waiting = [p.hour for p in plans if p.state == "open"]
    report.skipped = [p.hour for p in plans if p.state == "current"]
    progress(
        f"plan {start:%Y-%m-%dT%H} .. {end:%Y-%m-%dT%H}: {len(todo)} to process, "
        f"{sum(p.state == 'empty' for p in plans)} empty, {len(report.skipped)} up to date, "
        f"{len(report.waiting)} without a manifest yet"
    )
    if todo:
        store.mark_reprocessing([p.hour for p in todo])
        from spark_jobs.run import run

        session = spark or spark_for(settings)
        lake_uri = settings.lake_uri
        for group in spark_passes(plans):
            run(session, lake_uri, group[0], group[-1] + HOUR, settings, progress=progress, hours=group)
        for i in range(0, len(todo), GATE_CHUNK_HOURS):  # each table validated once per chunk
            chunk = todo[i : i + GATE_CHUNK_HOURS]
            gates.gate_clean_hours(settings, {p.hour: p.rows for p in chunk})
            gates.gate_curated_hours(settings, [p.hour for p in chunk])
        progress(f"gates passed for {len(todo)} hours")
        from warehouse.query import warehouse_loader

        loader = warehouse_loader(settings)
        loader.ensure_schema()
        for p in todo:
            rows = publish_step(settings, p.hour, loader)
            store.mark_published(p.hour, int(p.version or 1))
            report.processed.append(p.hour)
            progress(f"published {p.hour:%Y-%m-%dT%H} (manifest v{p.version}, {rows} warehouse rows)")
    for p in plans:
        if p.state == "empty":
            store.mark_published(p.hour, EMPTY_VERSION)
            report.empty.append(p.hour)
    report.watermark = store.watermark()
    progress(
        f"batch watermark: {report.watermark:%Y-%m-%dT%H}" if report.watermark else "batch watermark: none"
    )
    return report


# --- daily tables and reference data --------------------------------------------------------------


def process_day(settings: Settings, day: datetime, spark: Any = None) -> int:
    """Daily tables and sessions of one UTC day → gates → the day's warehouse tables."""
    from lambdalake.metrics.catalogue import load_catalogue
    from spark_jobs.run import daily_tables
    from warehouse.query import warehouse_loader

    day = hour_start(day).replace(hour=0)
    catalogue = load_catalogue(settings.metric_catalogues)
    daily_tables(spark or spark_for(settings), settings.lake_uri, [day], catalogue)
    gates.gate_daily(settings, day)
    loader = warehouse_loader(settings)
    loader.ensure_schema()
    results = loader.publish_hour(day, daily_warehouse_tables())
    register_partitions(settings, day)
    return sum(r.rows for r in results)


def publish_reference(settings: Settings) -> int:
    """Products and promos (whole-table dimensions) once their files pass the reference gate."""
    from warehouse.query import warehouse_loader
    from warehouse.tables import warehouse_tables

    gates.gate_reference(settings)
    names = [n for n, t in warehouse_tables().items() if t.grain == "full"]
    loader = warehouse_loader(settings)
    loader.ensure_schema()
    return sum(r.rows for r in loader.publish_hour(datetime.now(UTC), names))
