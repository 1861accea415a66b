"""Quality gates: a Great Expectations suite per published table, run on one hour (or day) of the lake.

A gate reads the interval's Parquet files of each table (pyarrow → pandas: an hour is small, and the
pandas engine of GE 1.x validates it in well under a second), validates its suite, writes the
validation result as JSON under ``_quality/<table>/<partition>.json`` (beside the data, outside the
partition folders Spark replaces and reads), logs one summary line, and raises ``GateFailed`` when an
expectation failed, so the task fails and nothing is published.

Suites are data (expectation class name + kwargs) built at call time: importing this module does not
import great_expectations (slow), so DAG files and the CLI stay fast to load.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson

from lambdalake import lake
from lambdalake.contract import ENVELOPE, schema_versions
from lambdalake.errors import LambdalakeError
from lambdalake.metrics.catalogue import Catalogue, load_catalogue
from lambdalake.settings import Settings
from spark_jobs.schemas import (
    CATEGORY_DAILY,
    CLEAN_EVENTS,
    CURATED,
    ERRORS_CLEAN,
    FUNNEL_DAILY,
    FUNNEL_STEPS,
    METRICS_DAILY,
    METRICS_HOURLY,
    ORDERS,
    PRODUCT_DAILY,
    PRODUCT_HOURLY,
    RAW_EVENTS,
    SESSIONS,
    USER_DAILY,
)

log = logging.getLogger(__name__)
QUALITY = "_quality"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
UUID_REGEX = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
COUNTED = ("count", "count_distinct", "sum", "top_k")  # aggregates of non-negative inputs

Expectation = tuple[str, dict[str, Any]]  # (class name in great_expectations.expectations, kwargs)


class GateFailed(LambdalakeError):
    """A suite failed: the interval's batch views must not be published."""


@dataclass(frozen=True)
class Suite:
    """What one table of one interval must satisfy; ``frame`` derives checked columns from the rows."""

    name: str
    root: str  # the table's folder under the lake
    grain: str  # "hour" or "day"
    columns: tuple[str, ...]
    expectations: Callable[[Catalogue], list[Expectation]]
    frame: Callable[[Any, datetime], Any] = field(default=lambda df, _start: df)


@dataclass(frozen=True)
class TableResult:
    suite: str
    interval: str
    rows: int
    success: bool
    evaluated: int
    failed: list[str]
    uri: str


def _not_null(*columns: str) -> list[Expectation]:
    return [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def _at_least_zero(*columns: str) -> list[Expectation]:
    return [("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0}) for c in columns]


def _within(column: str, seconds: int) -> Expectation:
    """Offsets (seconds from the interval start) inside the interval."""
    return ("ExpectColumnValuesToBeBetween", {"column": column, "min_value": 0, "max_value": seconds - 1e-6})


def _offset(df: Any, column: str, start: datetime) -> Any:
    import pandas as pd

    stamps = pd.to_datetime(df[column], utc=True)
    return (stamps - pd.Timestamp(start)).dt.total_seconds()


def event_types() -> list[str]:
    return sorted(name for name in schema_versions() if name != ENVELOPE)


def metric_names(catalogue: Catalogue) -> list[str]:
    return sorted(m.name for m in catalogue.metrics)


def counted_metrics(catalogue: Catalogue) -> list[str]:
    return sorted(m.name for m in catalogue.metrics if m.aggregate in COUNTED)


def _clean(df: Any, start: datetime) -> Any:
    return df.assign(ts_offset_s=_offset(df, "ts", start))


def _metrics(df: Any, start: datetime, catalogue_counted: Sequence[str]) -> Any:
    counted = df["value"].where(df["metric"].isin(list(catalogue_counted)))
    return df.assign(bucket_offset_s=_offset(df, "bucket_start", start), counted_value=counted)


@cache
def _counted(settings_key: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(counted_metrics(load_catalogue(list(settings_key))))


def _metrics_suite(name: str, table: str, grain: str, span_s: int, counted: Sequence[str]) -> Suite:
    """A curated metrics table: known metric names, buckets inside the interval, counts never negative."""
    return Suite(
        name,
        f"{CURATED}/{table}",
        grain,
        ("metric", "window", "bucket_start", "value"),
        lambda c: [
            *_not_null("metric", "window", "bucket_start"),
            ("ExpectColumnValuesToBeInSet", {"column": "metric", "value_set": metric_names(c)}),
            _within("bucket_offset_s", span_s),
            *_at_least_zero("counted_value"),
        ],
        lambda df, start: _metrics(df, start, counted),
    )


def hourly_suites(settings: Settings) -> dict[str, list[Suite]]:
    """Suites by pipeline step: ``clean`` (after raw → clean) and ``curated`` (after aggregates)."""
    counted = _counted(tuple(settings.metric_catalogues))
    clean = Suite(
        "clean_events",
        CLEAN_EVENTS,
        "hour",
        ("event_id", "event_type", "user_key", "ts"),
        lambda _c: [
            *_not_null("event_id", "event_type", "user_key", "ts"),
            ("ExpectColumnValuesToBeUnique", {"column": "event_id"}),
            ("ExpectColumnValuesToMatchRegex", {"column": "event_id", "regex": UUID_REGEX}),
            ("ExpectColumnValuesToBeInSet", {"column": "event_type", "value_set": event_types()}),
            _within("ts_offset_s", 3600),
        ],
        _clean,
    )
    metrics = _metrics_suite("metrics_hourly", METRICS_HOURLY, "hour", 3600, counted)
    products = Suite(
        "product_hourly",
        f"{CURATED}/{PRODUCT_HOURLY}",
        "hour",
        ("hour_start", "product_id", "views", "carts", "purchases", "units", "revenue", "conversion"),
        lambda _c: [
            *_not_null("product_id", "hour_start", "views", "carts", "purchases"),
            ("ExpectColumnValuesToBeUnique", {"column": "product_id"}),
            ("ExpectColumnValuesToBeBetween", {"column": "start_offset_s", "min_value": 0, "max_value": 0}),
            *_at_least_zero("views", "carts", "purchases", "units", "revenue", "conversion"),
        ],
        lambda df, start: df.assign(start_offset_s=_offset(df, "hour_start", start)),
    )
    orders = Suite(
        "orders",
        f"{CURATED}/{ORDERS}",
        "hour",
        ("order_id", "event_id", "ts", "user_key", "amount", "items_count", "units", "promo_discount_pct"),
        lambda _c: [
            *_not_null("order_id", "event_id", "ts", "user_key", "amount"),
            ("ExpectColumnValuesToBeUnique", {"column": "event_id"}),
            *_at_least_zero("amount", "items_count", "units"),
            (
                "ExpectColumnValuesToBeBetween",
                {"column": "promo_discount_pct", "min_value": 0, "max_value": 100},
            ),
            _within("ts_offset_s", 3600),
        ],
        _clean,
    )
    return {"clean": [clean], "curated": [metrics, products, orders]}


def daily_suites(settings: Settings) -> list[Suite]:
    """Suites of the daily tables and sessions (the daily DAG's gate)."""
    counted = _counted(tuple(settings.metric_catalogues))

    def dated(df: Any, start: datetime) -> Any:
        return df.assign(date_offset_s=_offset(df, "date", start))

    return [
        _metrics_suite("metrics_daily", METRICS_DAILY, "day", 86400, counted),
        Suite(
            "product_daily",
            f"{CURATED}/{PRODUCT_DAILY}",
            "day",
            ("date", "product_id", "views", "carts", "purchases", "revenue"),
            lambda _c: [
                *_not_null("product_id", "date"),
                ("ExpectColumnValuesToBeUnique", {"column": "product_id"}),
                *_at_least_zero("views", "carts", "purchases", "revenue"),
            ],
        ),
        Suite(
            "category_daily",
            f"{CURATED}/{CATEGORY_DAILY}",
            "day",
            ("date", "category", "views", "purchases", "revenue"),
            lambda _c: [*_not_null("date"), *_at_least_zero("views", "purchases", "revenue")],
        ),
        Suite(
            "funnel_daily",
            f"{CURATED}/{FUNNEL_DAILY}",
            "day",
            ("date", "step", "step_index", "sessions", "rate_from_first"),
            lambda _c: [
                *_not_null("step", "step_index", "sessions"),
                ("ExpectColumnValuesToBeInSet", {"column": "step", "value_set": list(FUNNEL_STEPS)}),
                *_at_least_zero("sessions", "rate_from_first"),
            ],
        ),
        Suite(
            "user_daily",
            f"{CURATED}/{USER_DAILY}",
            "day",
            ("date", "user_key", "events", "orders", "revenue"),
            lambda _c: [
                *_not_null("user_key", "date", "events"),
                ("ExpectColumnValuesToBeUnique", {"column": "user_key"}),
                *_at_least_zero("events", "orders", "revenue"),
                (
                    "ExpectColumnValuesToBeBetween",
                    {"column": "date_offset_s", "min_value": 0, "max_value": 0},
                ),
            ],
            dated,
        ),
        Suite(
            "sessions",
            f"{CURATED}/{SESSIONS}",
            "day",
            ("session_key", "user_key", "session_start", "duration_s", "events", "revenue"),
            lambda _c: [
                *_not_null("session_key", "user_key", "session_start"),
                ("ExpectColumnValuesToBeUnique", {"column": "session_key"}),
                *_at_least_zero("duration_s", "events", "revenue"),
            ],
        ),
    ]


# --- reading an interval of the lake ----------------------------------------------------------


def partition(start: datetime, grain: str) -> str:
    day = f"year={start:%Y}/month={start:%m}/day={start:%d}"
    return f"{day}/hour={start:%H}" if grain == "hour" else day


def data_files(settings: Settings, root: str, start: datetime, grain: str) -> list[str]:
    prefix = lake.join(settings.lake_uri, root, partition(start, grain))
    return [
        uri
        for uri, _size in lake.list_files(prefix + "/", settings)
        if uri.endswith(".parquet") and not uri.rsplit("/", 1)[-1].startswith(("_", "."))
    ]


def read_rows(settings: Settings, files: Sequence[str], columns: Sequence[str] | None) -> Any:
    """The files' rows as one pandas frame (only ``columns`` when given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for uri in files:
        filesystem, path = lake.filesystem(uri, settings)
        with filesystem.open_input_file(path) as handle:
            tables.append(pq.read_table(handle, columns=list(columns) if columns else None))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def count_rows(settings: Settings, files: Sequence[str]) -> int:
    import pyarrow.parquet as pq

    total = 0
    for uri in files:
        filesystem, path = lake.filesystem(uri, settings)
        with filesystem.open_input_file(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


# --- Great Expectations ------------------------------------------------------------------------

_GX_LOCK = threading.Lock()


@cache
def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate(name: str, df: Any, expectations: Sequence[Expectation]) -> dict[str, Any]:
    """Validate a pandas frame against a suite; the GE result as a JSON-able dict."""
    import great_expectations as gx

    with _GX_LOCK:  # one ephemeral context per process; its registries are not thread-safe
        context = _context()
        source = context.data_sources.add_or_update_pandas("lambdalake")
        asset = (
            source.add_dataframe_asset(name=name)
            if name not in source.get_asset_names()
            else (source.get_asset(name))
        )
        names = [b.name for b in asset.batch_definitions]
        batch_definition = (
            asset.get_batch_definition("whole")
            if "whole" in names
            else asset.add_batch_definition_whole_dataframe("whole")
        )
        suite = gx.ExpectationSuite(name=name)
        for kind, kwargs in expectations:
            suite.add_expectation(getattr(gx.expectations, kind)(**kwargs))
        batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
        return dict(batch.validate(suite).to_json_dict())


def _summary(result: dict[str, Any]) -> list[str]:
    failed = []
    for entry in result.get("results", []):
        if entry.get("success"):
            continue
        config = entry.get("expectation_config", {})
        column = config.get("kwargs", {}).get("column", "")
        unexpected = entry.get("result", {}).get("unexpected_count")
        detail = f" ({unexpected} unexpected)" if unexpected is not None else ""
        if entry.get("exception_info", {}).get("raised_exception"):
            detail = f" (error: {entry['exception_info'].get('exception_message')})"
        failed.append(f"{config.get('type')}[{column}]{detail}")
    return failed


def _write(settings: Settings, name: str, start: datetime, grain: str, body: dict[str, Any]) -> str:
    uri = lake.join(settings.lake_uri, QUALITY, name, f"{partition(start, grain)}.json")
    lake.write_bytes(uri, orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS), settings)
    return uri


def run_suite(settings: Settings, suite: Suite, start: datetime, catalogue: Catalogue) -> TableResult:
    """Validate one table over one interval and keep the result; an empty interval passes trivially
    only when the table may be empty (the reconciliation decides for clean events)."""
    files = data_files(settings, suite.root, start, suite.grain)
    df = read_rows(settings, files, suite.columns)
    label = partition(start, suite.grain)
    if df is None or df.empty:
        body: dict[str, Any] = {"success": True, "rows": 0, "results": [], "note": "no rows in the interval"}
    else:
        body = validate(suite.name, suite.frame(df, start), suite.expectations(catalogue))
        body["rows"] = len(df)
    body |= {"suite": suite.name, "interval": label, "files": len(files)}
    failed = _summary(body)
    uri = _write(settings, suite.name, start, suite.grain, body)
    return TableResult(
        suite.name, label, body["rows"], bool(body["success"]), len(body.get("results", [])), failed, uri
    )


# --- reconciliation with the raw manifest -----------------------------------------------------


def reconciliation(settings: Settings, hour: datetime, manifest_rows: int) -> TableResult:
    """clean + errors + duplicates removed == raw rows of the hour, every term counted independently:
    the manifest's rows must equal the raw files' rows, and duplicates removed (raw − clean − errors)
    can be neither negative nor more than the raw rows whose event_id repeats or is already clean."""
    import pandas as pd

    raw_files = data_files(settings, RAW_EVENTS, hour, "hour")
    raw = read_rows(settings, raw_files, ["event_id"])
    raw_ids = raw["event_id"] if raw is not None else pd.Series([], dtype=object)
    clean = read_rows(settings, data_files(settings, CLEAN_EVENTS, hour, "hour"), ["event_id"])
    clean_ids = clean["event_id"] if clean is not None else pd.Series([], dtype=object)
    error_rows = count_rows(settings, data_files(settings, ERRORS_CLEAN, hour, "hour"))
    raw_rows = len(raw_ids)
    removed = raw_rows - len(clean_ids) - error_rows
    row = {
        "raw_manifest_rows": manifest_rows,
        "raw_file_rows": raw_rows,
        "clean_rows": len(clean_ids),
        "error_rows": error_rows,
        "duplicates_removed": removed,
        "repeated_raw_rows": raw_rows - int(raw_ids.nunique(dropna=True)),
        "clean_ids_not_in_raw": int((~clean_ids.isin(set(raw_ids.dropna()))).sum()),
    }
    df = pd.DataFrame([row])
    expectations: list[Expectation] = [
        ("ExpectColumnPairValuesToBeEqual", {"column_A": "raw_manifest_rows", "column_B": "raw_file_rows"}),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "duplicates_removed", "min_value": 0, "max_value": raw_rows},
        ),
        ("ExpectColumnValuesToBeBetween", {"column": "clean_ids_not_in_raw", "min_value": 0, "max_value": 0}),
    ]
    body = validate("reconciliation", df, expectations) | {"counts": row, "rows": 1}
    body |= {"suite": "reconciliation", "interval": partition(hour, "hour"), "files": len(raw_files)}
    uri = _write(settings, "reconciliation", hour, "hour", body)
    return TableResult("reconciliation", body["interval"], 1, bool(body["success"]), 3, _summary(body), uri)


# --- the gates the pipeline calls ---------------------------------------------------------------


def _conclude(step: str, start: datetime, results: list[TableResult]) -> list[TableResult]:
    bad = [r for r in results if not r.success]
    line = ", ".join(f"{r.suite} {r.rows} rows {'ok' if r.success else 'FAILED'}" for r in results)
    log.info("gate %s %s: %s", step, start.strftime("%Y-%m-%dT%H"), line)
    if bad:
        detail = "; ".join(f"{r.suite}: {', '.join(r.failed)} (see {r.uri})" for r in bad)
        raise GateFailed(f"quality gate {step} {start:%Y-%m-%dT%H} failed: {detail}")
    return results


def gate_clean(settings: Settings, hour: datetime, manifest_rows: int) -> list[TableResult]:
    """After raw → clean: the clean hour's suite and its reconciliation with the raw manifest."""
    hour = hour.astimezone(UTC)
    catalogue = load_catalogue(settings.metric_catalogues)
    results = [run_suite(settings, s, hour, catalogue) for s in hourly_suites(settings)["clean"]]
    results.append(reconciliation(settings, hour, manifest_rows))
    return _conclude("clean", hour, results)


def gate_curated(settings: Settings, hour: datetime) -> list[TableResult]:
    """After aggregates: the hour's curated tables."""
    hour = hour.astimezone(UTC)
    catalogue = load_catalogue(settings.metric_catalogues)
    return _conclude(
        "curated", hour, [run_suite(settings, s, hour, catalogue) for s in hourly_suites(settings)["curated"]]
    )


def gate_daily(settings: Settings, day: datetime) -> list[TableResult]:
    """After the daily job: the day's tables and sessions."""
    day = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    catalogue = load_catalogue(settings.metric_catalogues)
    return _conclude("daily", day, [run_suite(settings, s, day, catalogue) for s in daily_suites(settings)])


def gate_reference(settings: Settings) -> list[TableResult]:
    """Reference CSVs: product ids present and unique, prices and discounts in range."""
    import pandas as pd

    from lambdalake.lake import REFERENCE_PRODUCTS, REFERENCE_PROMOS

    specs: list[tuple[str, str, list[Expectation]]] = [
        (
            "reference_products",
            REFERENCE_PRODUCTS,
            [
                *_not_null("product_id"),
                ("ExpectColumnValuesToBeUnique", {"column": "product_id"}),
                *_at_least_zero("price"),
            ],
        ),
        (
            "reference_promos",
            REFERENCE_PROMOS,
            [
                *_not_null("promo_code"),
                ("ExpectColumnValuesToBeUnique", {"column": "promo_code"}),
                (
                    "ExpectColumnValuesToBeBetween",
                    {"column": "discount_pct", "min_value": 0, "max_value": 100},
                ),
            ],
        ),
    ]
    results = []
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for name, path, expectations in specs:
        uri = lake.join(settings.lake_uri, path)
        if not lake.exists(uri, settings):
            raise GateFailed(f"quality gate reference: {uri} is missing")
        df = pd.read_csv(io.BytesIO(lake.read_bytes(uri, settings)))
        body = validate(name, df, expectations) | {
            "suite": name,
            "rows": len(df),
            "interval": f"{today:%Y-%m-%d}",
        }
        out = _write(settings, name, today, "day", body)
        results.append(
            TableResult(
                name, body["interval"], len(df), bool(body["success"]), len(expectations), _summary(body), out
            )
        )
    return _conclude("reference", today, results)
