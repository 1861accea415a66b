"""Quality gates: a Great Expectations suite per published table, run on one hour (or day) of the lake.

A gate reads the interval's Parquet files of each table (pyarrow → pandas: an hour is small, and the
pandas engine of GE 1.x validates it in well under a second), validates its suite, writes the
validation result as JSON under ``_quality/<table>/<partition>.json`` (beside the data, outside the
partition folders Spark replaces and reads), logs one summary line, and raises ``GateFailed`` when an
expectation failed, so the task fails and nothing is published.

Backfills gate many hours per call (``gate_clean_hours``/``gate_curated_hours``): each table's rows of
all the hours are validated ONCE, every row tagged with its own hour (``_interval``), so ranges are
relative to each row's hour and uniqueness holds per (hour, key), exactly as hour by hour. The failing
hours are named from GE's unexpected row indexes; each hour still gets its ``<partition>.json`` (its
slice of the result) referencing the chunk's full result under ``_quality/<table>/_chunks/``.

Suites are data (expectation class name + kwargs) built at call time: importing this module does not
import great_expectations (slow), so DAG files and the CLI stay fast to load.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
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
    start: datetime | None = None  # the interval's start, to name a failing hour


def _not_null(*columns: str) -> list[Expectation]:
    return [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def _at_least_zero(*columns: str) -> list[Expectation]:
    return [("ExpectColumnValuesToBeBetween", {"column": c, "min_value": 0}) for c in columns]


def _within(column: str, seconds: int) -> Expectation:
    """Offsets (seconds from the interval start) inside the interval."""
    return ("ExpectColumnValuesToBeBetween", {"column": column, "min_value": 0, "max_value": seconds - 1e-6})


def _offset(df: Any, column: str, start: Any) -> Any:
    """Seconds from ``start``: one datetime, or a Series of each row's interval start."""
    import pandas as pd

    stamps = pd.to_datetime(df[column], utc=True)
    origin = pd.to_datetime(start, utc=True) if isinstance(start, pd.Series) else pd.Timestamp(start)
    return (stamps - origin).dt.total_seconds()


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


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=16)
def _load_catalogue(paths: tuple[str, ...], _stamps: tuple[tuple[int, int] | None, ...]) -> Catalogue:
    return load_catalogue(list(paths))


def catalogue_of(settings: Settings) -> Catalogue:
    """The settings' metric catalogue, read once per process (and again only if a file changed)."""
    paths = tuple(str(p) for p in settings.metric_catalogues)
    return _load_catalogue(paths, tuple(_stamp(p) for p in paths))


def _counted(settings: Settings) -> tuple[str, ...]:
    return tuple(counted_metrics(catalogue_of(settings)))


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
    counted = _counted(settings)
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
    counted = _counted(settings)

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


def validate(
    name: str, df: Any, expectations: Sequence[Expectation], result_format: str = "BASIC"
) -> dict[str, Any]:
    """Validate a pandas frame against a suite; the GE result as a JSON-able dict (``COMPLETE``
    lists every unexpected row's index, to tell which hours of a many-hours frame failed)."""
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
        result = batch.validate(suite, result_format={"result_format": result_format})
        return dict(result.to_json_dict())


def _summary(result: dict[str, Any]) -> list[str]:
    failed = []
    for entry in result.get("results", []):
        if entry.get("success"):
            continue
        config = entry.get("expectation_config", {})
        kwargs = config.get("kwargs", {})
        column = kwargs.get("column") or ",".join(kwargs.get("column_list") or ()) or ""
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


def per_interval(expectations: Sequence[Expectation]) -> list[Expectation]:
    """The suite for a frame of many intervals: a key unique within its table's interval becomes the
    pair (``_interval``, key) unique, so hours validated together pass or fail as they would alone."""
    out: list[Expectation] = []
    for kind, kwargs in expectations:
        if kind == "ExpectColumnValuesToBeUnique":
            kind, kwargs = (
                "ExpectCompoundColumnsToBeUnique",
                {"column_list": ["_interval", kwargs["column"]], "ignore_row_if": "any_value_is_missing"},
            )
        out.append((kind, kwargs))
    return out


def _slices(body: dict[str, Any], df: Any, labels: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each interval's share of a many-intervals result: per expectation its success and unexpected
    count there. A failed expectation without row indexes (an exception, an aggregate) fails every
    interval with rows: the hour cannot be told."""
    counts = df["_interval"].value_counts().to_dict()
    out: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for entry in body.get("results", []):
        config = entry.get("expectation_config", {})
        config = {"type": config.get("type"), "kwargs": config.get("kwargs", {})}
        indexes = entry.get("result", {}).get("unexpected_index_list")
        known = indexes is not None and not entry.get("exception_info", {}).get("raised_exception")
        bad: dict[str, int] = {}
        if known:
            bad = df.loc[list(indexes), "_interval"].value_counts().to_dict() if indexes else {}
            if not entry.get("success") and not bad:
                known = False  # failed without an unexpected row: not attributable
        for label in labels:
            if not counts.get(label):
                continue
            if entry.get("success"):
                ok, result = True, {"unexpected_count": 0}
            elif known:
                ok, result = label not in bad, {"unexpected_count": int(bad.get(label, 0))}
            else:
                ok, result = False, {}
            item: dict[str, Any] = {"expectation_config": config, "success": ok, "result": result}
            if not ok and not known:
                item["exception_info"] = entry.get("exception_info", {})
            out[label].append(item)
    return out


def _chunk_uri(settings: Settings, name: str, starts: Sequence[datetime]) -> str:
    first, last = min(starts), max(starts)
    return lake.join(
        settings.lake_uri, QUALITY, name, "_chunks", f"{first:%Y-%m-%dT%H}--{last:%Y-%m-%dT%H}.json"
    )


def _frame_of(
    settings: Settings, root: str, starts: Sequence[datetime], grain: str, columns: Sequence[str]
) -> tuple[Any, dict[datetime, int]]:
    """The rows of every interval in one frame, each tagged with its interval's partition
    (``_interval``); and the number of data files per interval."""
    import pandas as pd

    frames, files = [], {}
    for start in starts:
        found = data_files(settings, root, start, grain)
        files[start] = len(found)
        df = read_rows(settings, found, columns)
        if df is not None and not df.empty:
            frames.append(df.assign(_interval=partition(start, grain)))
    return (pd.concat(frames, ignore_index=True) if frames else None), files


def _run_many(
    settings: Settings,
    name: str,
    grain: str,
    starts: Sequence[datetime],
    df: Any,
    files: Mapping[datetime, int],
    checked: Callable[[Any], Any],
    expectations: Sequence[Expectation],
    extra: Callable[[Any, str], dict[str, Any]] = lambda _df, _label: {},
) -> list[TableResult]:
    """Validate ``df`` (rows of every interval, tagged) once and write each interval's result."""
    labels = [partition(s, grain) for s in starts]
    full: dict[str, Any] | None = None
    if df is not None and not df.empty:
        full = validate(name, checked(df), per_interval(expectations), "COMPLETE")
        full["rows"] = len(df)
    rows = df["_interval"].value_counts().to_dict() if full is not None else {}
    shares = _slices(full, df, labels) if full is not None else {}
    chunk = None
    if len(starts) > 1 and full is not None:
        chunk_uri = _chunk_uri(settings, name, starts)
        first, last = labels[0], labels[-1]
        full |= {"suite": name, "interval": f"{first} .. {last}", "intervals": len(starts)}
        full["files"] = sum(files.values())
        lake.write_bytes(
            chunk_uri, orjson.dumps(full, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS), settings
        )
        chunk = {"uri": chunk_uri, "intervals": len(starts), "rows": full["rows"], "success": full["success"]}
    out = []
    for start, label in zip(starts, labels, strict=True):
        count = int(rows.get(label, 0))
        if count == 0:
            body: dict[str, Any] = {
                "success": True,
                "rows": 0,
                "results": [],
                "note": "no rows in the interval",
            }
        elif len(starts) == 1 and full is not None:
            body = dict(full)  # one interval: its result is the whole GE result
        else:
            results = shares[label]
            body = {"success": all(r["success"] for r in results), "rows": count, "results": results}
        if chunk is not None:
            body["chunk"] = chunk
        body |= {"suite": name, "interval": label, "files": files.get(start, 0)} | extra(df, label)
        uri = _write(settings, name, start, grain, body)
        out.append(
            TableResult(
                name,
                label,
                body["rows"],
                bool(body["success"]),
                len(body["results"]),
                _summary(body),
                uri,
                start,
            )
        )
    return out


def run_suite_many(
    settings: Settings, suite: Suite, starts: Sequence[datetime], catalogue: Catalogue
) -> list[TableResult]:
    """Validate one table over many intervals with one GE run; a result per interval. An empty
    interval passes trivially (the reconciliation decides whether clean events may be empty)."""
    starts = sorted(starts)
    df, files = _frame_of(settings, suite.root, starts, suite.grain, suite.columns)
    origins = {partition(s, suite.grain): s for s in starts}

    def checked(frame: Any) -> Any:
        return suite.frame(frame, frame["_interval"].map(origins))

    return _run_many(
        settings, suite.name, suite.grain, starts, df, files, checked, suite.expectations(catalogue)
    )


def run_suite(settings: Settings, suite: Suite, start: datetime, catalogue: Catalogue) -> TableResult:
    """Validate one table over one interval and keep the result."""
    return run_suite_many(settings, suite, [start], catalogue)[0]


# --- reconciliation with the raw manifest -----------------------------------------------------


def _counts(settings: Settings, hour: datetime, manifest_rows: int) -> tuple[dict[str, Any], int]:
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
    return row, len(raw_files)


def reconciliation_hours(settings: Settings, manifest_rows: Mapping[datetime, int]) -> list[TableResult]:
    """clean + errors + duplicates removed == raw rows, for each hour, every term counted
    independently: the manifest's rows must equal the raw files' rows, and duplicates removed
    (raw − clean − errors) can be neither negative nor more than the raw rows. One row per hour,
    validated together; each hour gets its own result and counts."""
    import pandas as pd

    hours = sorted(h.astimezone(UTC) for h in manifest_rows)
    given = {h.astimezone(UTC): n for h, n in manifest_rows.items()}
    rows, files = [], {}
    for hour in hours:
        row, files[hour] = _counts(settings, hour, given[hour])
        rows.append(row | {"_interval": partition(hour, "hour")})
    df = pd.DataFrame(rows)
    counts = {r["_interval"]: {k: v for k, v in r.items() if k != "_interval"} for r in rows}
    expectations: list[Expectation] = [
        ("ExpectColumnPairValuesToBeEqual", {"column_A": "raw_manifest_rows", "column_B": "raw_file_rows"}),
        ("ExpectColumnValuesToBeBetween", {"column": "duplicates_removed", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "removed_beyond_raw", "max_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "clean_ids_not_in_raw", "min_value": 0, "max_value": 0}),
    ]

    def checked(frame: Any) -> Any:
        return frame.assign(removed_beyond_raw=frame["duplicates_removed"] - frame["raw_file_rows"])

    return _run_many(
        settings,
        "reconciliation",
        "hour",
        hours,
        df,
        files,
        checked,
        expectations,
        lambda _df, label: {"counts": counts[label]},
    )


# --- the gates the pipeline calls ---------------------------------------------------------------


def _conclude(step: str, starts: Sequence[datetime], results: list[TableResult]) -> list[TableResult]:
    first, last = min(starts), max(starts)
    many = len(starts) > 1
    when = f"{first:%Y-%m-%dT%H}..{last:%Y-%m-%dT%H}" if many else f"{first:%Y-%m-%dT%H}"
    bad = [r for r in results if not r.success]
    totals: dict[str, list[int]] = {}
    for r in results:
        entry = totals.setdefault(r.suite, [0, 0])
        entry[0] += r.rows
        entry[1] += not r.success

    def state(failed: int) -> str:
        return "ok" if not failed else f"FAILED ({failed} intervals)" if many else "FAILED"

    line = ", ".join(f"{suite} {rows} rows {state(failed)}" for suite, (rows, failed) in totals.items())
    log.info("gate %s %s%s: %s", step, when, f" ({len(starts)} hours)" if many else "", line)
    if bad:
        failing = sorted({r.start for r in bad if r.start is not None})
        names = ", ".join(f"{h:%Y-%m-%dT%H}" for h in failing)
        detail = "; ".join(
            f"{r.suite}"
            + (f" {r.start:%Y-%m-%dT%H}" if many and r.start is not None else "")
            + f": {', '.join(r.failed)} (see {r.uri})"
            for r in bad
        )
        scope = f"{when}, failing hours {names}" if many else when
        raise GateFailed(f"quality gate {step} {scope} failed: {detail}")
    return results


def gate_clean_hours(settings: Settings, manifest_rows: Mapping[datetime, int]) -> list[TableResult]:
    """After raw → clean, for many hours (hour → its manifest's rows): the clean suite validated
    once over all of them, and each hour's reconciliation with its raw manifest."""
    given = {h.astimezone(UTC): n for h, n in manifest_rows.items()}
    if not given:
        return []
    hours = sorted(given)
    catalogue = catalogue_of(settings)
    results = [
        r for s in hourly_suites(settings)["clean"] for r in run_suite_many(settings, s, hours, catalogue)
    ]
    results += reconciliation_hours(settings, given)
    return _conclude("clean", hours, results)


def gate_curated_hours(settings: Settings, hours: Sequence[datetime]) -> list[TableResult]:
    """After aggregates, for many hours: each curated table validated once over all of them."""
    hours = sorted({h.astimezone(UTC) for h in hours})
    if not hours:
        return []
    catalogue = catalogue_of(settings)
    results = [
        r for s in hourly_suites(settings)["curated"] for r in run_suite_many(settings, s, hours, catalogue)
    ]
    return _conclude("curated", hours, results)


def gate_clean(settings: Settings, hour: datetime, manifest_rows: int) -> list[TableResult]:
    """After raw → clean: the clean hour's suite and its reconciliation with the raw manifest."""
    return gate_clean_hours(settings, {hour: manifest_rows})


def gate_curated(settings: Settings, hour: datetime) -> list[TableResult]:
    """After aggregates: the hour's curated tables."""
    return gate_curated_hours(settings, [hour])


def gate_daily(settings: Settings, day: datetime) -> list[TableResult]:
    """After the daily job: the day's tables and sessions."""
    day = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    catalogue = catalogue_of(settings)
    return _conclude("daily", [day], [run_suite(settings, s, day, catalogue) for s in daily_suites(settings)])


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
    return _conclude("reference", [today], results)
