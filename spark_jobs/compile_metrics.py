"""The metric catalogue compiled into one Spark aggregation: the batch layer's reading of each entry.

The speed layer reads an entry event by event (``lambdalake.metrics.evaluate.contributions``);
this module reads the same entry into column expressions that yield the same contributions, then
aggregates them exactly (count_distinct is exact here, HyperLogLog there). Tests feed both the same
events and compare every batch metric, so the readings cannot drift apart.

JSON values keep their JSON type (Spark's VARIANT), so the Python semantics hold: a sum skips an
amount sent as the string "12", ``==`` between "1" and 1 is false, keys are ``str(value)``.

One pass per grain: every event becomes an array of contributions (one per metric, exploded array
item and window), exploded and grouped once. Output, one row per value (``METRIC_COLUMNS``):

- count, sum, count_distinct, min, max: ``item`` and ``rank`` null, ``value`` the number;
- last: ``item`` the latest value as text, ``value`` it as a number when it is one;
- top_k: ``item`` the item, ``rank`` 1..k (score descending, then item), ``value`` its score;
- last_n: ``item``, ``rank`` 1..n newest first, ``value`` its latest event time (epoch s);
- co_occurrence: ``key`` is the metric's key plus the item, ``item`` a co-occurring item, ``value``
  the number of distinct ``scope`` values (sessions) holding both in the bucket.

Tumbling windows that divide an hour go to the hourly table, those above an hour that divide a
day to the daily table; lifetime metrics get one partial per hour (and per day). The serving
layer combines lifetime partials (sum of counts and sums, min of mins, max of maxes).

Stagger windows (``stagger: 1m``) go to the hourly table of the hour holding their start: ``window``
is the label (``stagger_1m``), ``bucket_start`` the window's start — the event time, to the
microsecond, of the event that opened it — and ``key`` the key. They are assigned per key in
event-time order, the greedy reading of ``evaluate.stagger_window`` (the speed layer's function)
folded in Spark expressions. A window can hold events of the next hour and depends on the key's
earlier events, so the hourly job passes ``context``: the clean events of the hours around it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lambdalake.metrics.catalogue import Catalogue, Condition, Metric, format_duration
from lambdalake.metrics.evaluate import MICROS
from spark_jobs.schemas import METRIC_COLUMNS

Grain = Literal["hour", "day"]
GRAIN_SECONDS: dict[str, int] = {"hour": 3600, "day": 86400}
LIFETIME = "lifetime"
_TOP_LEVEL = ("event_type", "event_id", "user_id", "anonymous_id", "session_id")
_NUMBER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE", "DECIMAL")
_RANKED = ("top_k", "last_n")
HOUR_MICROS = 3600 * MICROS


class NotCompilable(ValueError):
    """An entry the batch layer cannot read exactly as the speed layer does."""


@dataclass(frozen=True)
class Value:
    """A field's value as Python would see it: JSON kind, ``str(value)`` and the number if any."""

    kind: Column  # 'string' | 'number' | 'boolean' | 'null' (missing or JSON null) | 'other'
    text: Column
    num: Column  # numbers and booleans (1.0 / 0.0); null otherwise

    @property
    def present(self) -> Column:
        return self.kind != F.lit("null")


def _kind(variant: Column, kind_name: Column) -> Column:
    return (
        F.when(variant.isNull() | (kind_name == "VOID"), F.lit("null"))
        .when(kind_name == "STRING", F.lit("string"))
        .when(kind_name == "BOOLEAN", F.lit("boolean"))
        .when(F.regexp_extract(kind_name, r"^([A-Z]+)", 1).isin(*_NUMBER_TYPES), F.lit("number"))
        .otherwise(F.lit("other"))
    )


def _typed(variant: Column, kind: Column, text: Column) -> Value:
    boolean_text = F.when(text == "true", F.lit("True")).otherwise(F.lit("False"))
    return Value(
        kind=kind,
        text=F.when(kind == "boolean", boolean_text).otherwise(text),
        # Python's bool is an int: True == 1 and max(True, 0.5) hold (but sums skip booleans).
        num=F.when(kind == "number", F.variant_get(variant, "$", "double")).when(
            kind == "boolean", F.when(text == "true", F.lit(1.0)).otherwise(F.lit(0.0))
        ),
    )


def _json_value(variant: Column) -> Value:
    return _typed(
        variant, _kind(variant, F.schema_of_variant(variant)), F.variant_get(variant, "$", "string")
    )


def _struct_value(column: Column) -> Value:
    return Value(kind=column["kind"], text=column["text"], num=column["num"])


def _column_name(path: str) -> str:
    return "_f_" + path.replace(".", "__")


def _string_value(column: Column) -> Value:
    return Value(
        kind=F.when(column.isNull(), F.lit("null")).otherwise(F.lit("string")),
        text=column,
        num=F.lit(None).cast("double"),
    )


def field(path: str, item: Column | None = None) -> Value:
    """The value at a catalogue field path, for events carrying ``_p``/``_c`` (parsed JSON)."""
    if path == "user":
        return _string_value(F.coalesce(F.col("user_id"), F.col("anonymous_id")))
    if path in _TOP_LEVEL:
        return _string_value(F.col(path))
    if path == "ts":
        raise NotCompilable("`ts` is read as text by the speed layer; batch supports it in min/max/last only")
    if not path.startswith("item."):
        return _struct_value(F.col(_column_name(path)))  # parsed once per event by `_with_fields`
    if item is None:
        raise NotCompilable(f"{path}: `item.` fields need `explode`")
    return _struct_value(item[_column_name(path)])  # typed once per array item by `_with_fields`


def _json_paths(metrics: Iterable[Metric]) -> list[str]:
    paths = {
        p
        for m in metrics
        for p in (*m.fields(), m.explode or "")
        if p.startswith(("properties.", "context."))
    }
    return sorted(paths)


def _item_paths(metrics: Iterable[Metric]) -> dict[str, list[str]]:
    """For each exploded array, the item field paths metrics read from its elements."""
    found: dict[str, set[str]] = {}
    for metric in metrics:
        if metric.explode:
            found.setdefault(metric.explode, set()).update(
                p for p in metric.fields() if p.startswith("item.")
            )
    return {array: sorted(paths) for array, paths in sorted(found.items())}


def _typed_struct(value: Value, name: str) -> Column:
    return F.struct(value.kind.alias("kind"), value.text.alias("text"), value.num.alias("num")).alias(name)


def _items(variant: Column, paths: list[str]) -> Column:
    """The array's object elements, each with its item fields typed once (other elements are skipped)."""
    array = F.coalesce(F.try_variant_get(variant, "$", "array<variant>"), F.array().cast("array<variant>"))

    def typed(element: Column) -> Column:
        fields = [_json_value(F.variant_get(element, "$." + p.partition(".")[2], "variant")) for p in paths]
        return F.struct(*[_typed_struct(v, _column_name(p)) for v, p in zip(fields, paths, strict=True)])

    return F.transform(F.filter(array, _is_object), typed)


def _with_fields(parsed: DataFrame, paths: list[str], arrays: dict[str, list[str]]) -> DataFrame:
    """Each JSON field path as a (kind, text, num) column, parsed once per event for every metric.

    Three projections, so Spark keeps each step's result instead of inlining the JSON work into
    every expression that reads it (one giant expression also fails code generation).
    """
    base = parsed.columns
    variants = parsed.select(
        *base,
        *[
            F.variant_get(
                "_p" if p.startswith("properties.") else "_c", "$." + p.partition(".")[2], "variant"
            ).alias(f"{_column_name(p)}_v")
            for p in paths
        ],
    )
    described = variants.select(
        *variants.columns,
        *[F.schema_of_variant(f"{_column_name(p)}_v").alias(f"{_column_name(p)}_s") for p in paths],
        *[F.variant_get(f"{_column_name(p)}_v", "$", "string").alias(f"{_column_name(p)}_t") for p in paths],
    )
    typed = []
    for p in paths:
        name = _column_name(p)
        variant = F.col(f"{name}_v")
        typed.append(
            _typed_struct(_typed(variant, _kind(variant, F.col(f"{name}_s")), F.col(f"{name}_t")), name)
        )
    items = [
        _items(F.col(f"{_column_name(a)}_v"), item_paths).alias(f"{_column_name(a)}_items")
        for a, item_paths in arrays.items()
    ]
    return described.select(*base, *typed, *items)


def _equals(value: Value, expected: Any) -> Column:
    if expected is None:
        return ~value.present
    if isinstance(expected, int | float):
        return value.num == float(expected)
    if isinstance(expected, str):
        return (value.kind == "string") & (value.text == expected)
    raise NotCompilable(f"comparison with {expected!r}: only strings, numbers, booleans and null")


def condition(test: Condition, item: Column | None = None) -> Column:
    """A filter condition with the Python semantics of ``evaluate.holds`` (never null)."""
    value = field(test.field, item)
    op, expected = test.op, test.value
    if op == "exists":
        return value.present
    if op == "==":
        return F.coalesce(_equals(value, expected), F.lit(False))
    if op == "!=":
        return ~F.coalesce(_equals(value, expected), F.lit(False))
    if op == "in":
        options = [F.coalesce(_equals(value, option), F.lit(False)) for option in expected or ()]
        return functools.reduce(operator.or_, options, F.lit(False))
    compare = {">": Column.__gt__, ">=": Column.__ge__, "<": Column.__lt__, "<=": Column.__le__}[op]
    if expected is None:
        raise NotCompilable(f"{test.field} {op} null: ordering needs a number or a string")
    if isinstance(expected, int | float):
        held = compare(value.num, F.lit(float(expected)))
    else:
        held = (value.kind == "string") & compare(value.text, F.lit(str(expected)))
    return F.coalesce(held, F.lit(False))


def _windows(metric: Metric, grain: Grain) -> list[tuple[str, int]]:
    """(label, seconds) of the metric's windows that this grain's table holds."""
    if metric.stagger_label:
        return [(metric.stagger_label, metric.stagger_seconds)] if grain == "hour" else []
    if metric.is_lifetime:
        return [(LIFETIME, GRAIN_SECONDS[grain])]
    low, high = (0, 3600) if grain == "hour" else (3600, 86400)
    return [(format_duration(s), s) for s in metric.window_seconds if low < s <= high and high % s == 0]


def batch_metrics(catalogue: Catalogue) -> list[Metric]:
    """The entries the batch layer recomputes."""
    return [m for m in catalogue.aggregated() if m.batch]


def unsupported_windows(catalogue: Catalogue) -> dict[str, list[str]]:
    """Tumbling windows no batch table holds (neither dividing an hour nor a day)."""
    skipped = {}
    for metric in batch_metrics(catalogue):
        held = {label for grain in GRAIN_SECONDS for label, _ in _windows(metric, grain)}  # type: ignore[arg-type]
        missing = [w for w in metric.windows if w != LIFETIME and w not in held]
        if missing:
            skipped[metric.name] = missing
    return skipped


def _contribution(metric: Metric, grain: Grain, item: Column | None) -> tuple[Column, Column]:
    """(condition, struct) of one event's (or array item's) contribution to the metric."""
    aggregate = metric.aggregate
    keys = [field(path, item) for path in metric.by]
    ok = condition_all(metric, item)
    for key in keys:
        ok = ok & key.present
    text, num = F.lit(None).cast("string"), F.lit(1.0)
    order = F.unix_micros(F.col("ts")) / F.lit(1e6)
    if aggregate != "count":
        path = metric.value_path
        assert path is not None  # the catalogue model guarantees it
        if path == "ts" and aggregate in ("min", "max", "last"):
            text, num = order.cast("string"), order
        else:
            value = field(path, item)
            ok = ok & value.present
            if aggregate == "sum":
                ok = ok & (value.kind == "number")
            text, num = value.text, value.num
            if aggregate == "count_distinct":  # Python's set: 1 == 1.0, but "1" != 1
                text = F.coalesce(
                    F.concat(F.lit("n:"), value.num.cast("string")), F.concat(F.lit("s:"), value.text)
                )
        if metric.weight:
            weight = field(metric.weight, item)
            ok = ok & (weight.kind == "number")
            num = weight.num
        elif aggregate == "top_k":
            num = F.lit(1.0)
        elif aggregate == "last_n":
            num = order
    windows = F.array(
        *[
            F.struct(
                F.lit(label).alias("label"),
                F.lit(size).cast("bigint").alias("size"),
                F.lit(metric.is_stagger).alias("stagger"),
            )
            for label, size in _windows(metric, grain)
        ]
    )
    scope = field(metric.scope, item).text if metric.scope else F.lit(None).cast("string")
    if metric.scope:
        ok = ok & field(metric.scope, item).present
    limit = metric.k if aggregate in ("top_k", "co_occurrence") else metric.n
    row = F.struct(
        F.lit(metric.name).alias("metric"),
        F.lit(aggregate).alias("aggregate"),
        F.array(*[k.text for k in keys]).cast("array<string>").alias("key"),
        (text if aggregate in ("count_distinct", "top_k", "last_n", "co_occurrence") else F.lit(None))
        .cast("string")
        .alias("item"),
        text.cast("string").alias("text"),
        num.cast("double").alias("num"),
        order.cast("double").alias("ord"),
        F.unix_micros(F.col("ts")).alias("us"),
        scope.cast("string").alias("scope"),
        F.lit(limit).cast("int").alias("limit"),
        windows.alias("windows"),
    )
    return F.coalesce(ok, F.lit(False)), row


def condition_all(metric: Metric, item: Column | None) -> Column:
    types = metric.filter.event_type
    held = F.col("event_type").isin(*types) if types else F.lit(True)
    for test in metric.filter.where:
        held = held & condition(test, item)
    return F.coalesce(held, F.lit(False))


def _metric_contributions(metric: Metric, grain: Grain) -> Column:
    """An array of the event's contributions to one metric; null elements where it contributes nothing."""
    if not metric.explode:
        ok, row = _contribution(metric, grain, None)
        return F.array(F.when(ok, row))
    if not metric.explode.startswith(("properties.", "context.")):
        raise NotCompilable(f"explode {metric.explode}: only JSON arrays in properties or context")

    def contribution(element: Column) -> Column:
        ok, row = _contribution(metric, grain, element)
        return F.when(ok, row)

    return F.transform(F.col(f"{_column_name(metric.explode)}_items"), contribution)


def _is_object(element: Column) -> Column:
    return F.coalesce(F.schema_of_variant(element).startswith("OBJECT"), F.lit(False))


def compile_metrics(metrics: Iterable[Metric], grain: Grain) -> list[Metric]:
    """The metrics with a window in this grain's table; raises NotCompilable for unfaithful entries."""
    chosen = [m for m in metrics if not m.is_derived and _windows(m, grain)]
    for metric in chosen:
        _metric_contributions(metric, grain)  # builds the expressions: fails early on unsupported entries
    return chosen


def _exploded(events: DataFrame, chosen: list[Metric], grain: Grain) -> DataFrame:
    """The events' contributions to the chosen metrics, one row each, with the metric's windows."""
    parsed = events.select(
        "event_type",
        "event_id",
        "user_id",
        "anonymous_id",
        "session_id",
        "ts",
        F.try_parse_json("properties").alias("_p"),
        F.try_parse_json("context").alias("_c"),
    )
    arrays = [_metric_contributions(m, grain) for m in chosen]
    fields = _with_fields(parsed, _json_paths(chosen), _item_paths(chosen))
    return fields.select(F.explode(F.concat(*arrays)).alias("c")).where(F.col("c").isNotNull()).select("c.*")


def contributions(
    events: DataFrame,
    metrics: Iterable[Metric],
    grain: Grain,
    context: DataFrame | None = None,
    hours: Sequence[datetime] | None = None,
) -> DataFrame:
    """One row per (event contribution, window): the batch twin of ``evaluate.contributions``.

    Stagger windows are assigned over ``events`` plus ``context`` (clean events of the hours around
    the interval: earlier windows that still take events, later events that fall in a window); with
    ``hours``, only windows starting in those hours are kept. Other windows read ``events`` only.
    """
    chosen = compile_metrics(metrics, grain)
    rows = _exploded(events, chosen, grain)
    staggered = [m for m in chosen if m.is_stagger]
    if staggered and context is not None:
        rows = rows.unionByName(_exploded(context, staggered, grain))
    flat = rows.select("*", F.explode("windows").alias("w"))
    tumbling = flat.where(~F.col("w.stagger")).select(
        "metric",
        "aggregate",
        F.col("w.label").alias("window"),
        F.timestamp_seconds(F.floor(F.col("ord") / F.col("w.size")) * F.col("w.size")).alias("bucket_start"),
        "key",
        "item",
        "text",
        "num",
        "ord",
        "scope",
        "limit",
    )
    if not staggered:
        return tumbling
    return tumbling.unionByName(_stagger_buckets(flat.where(F.col("w.stagger")), hours))


def _stagger_buckets(flat: DataFrame, hours: Sequence[datetime] | None) -> DataFrame:
    """Stagger contributions with ``bucket_start`` the start of their window, per (metric, key).

    The greedy scan of ``evaluate.stagger_window`` in Spark expressions: per key, its distinct event
    times sorted, folded into the list of window starts (an event opens a window when it is at least
    ``size`` after the latest start); then each contribution takes the latest start at or before it.
    The fold copies the list on each opening, so it costs O(windows²) per key and job, which the
    interval bounds (a day of one-minute windows is 1,440); no Python runs on the executors.
    """
    rows = flat.select(
        # one group per metric, window and key; JSON keeps ["a:b"] and ["a", "b"] apart
        F.to_json(F.concat(F.array("metric", F.col("w.label")), "key")).alias("_g"),
        "us",
        "metric",
        "aggregate",
        F.col("w.label").alias("window"),
        "key",
        "item",
        "text",
        "num",
        "ord",
        "scope",
        "limit",
        (F.col("w.size") * F.lit(MICROS)).alias("size_us"),
    )
    per_key = rows.groupBy("_g").agg(
        F.array_sort(F.collect_set("us")).alias("times"), F.first("size_us").alias("size_us")
    )

    def scan(starts: Column, t: Column) -> Column:
        opens = t >= F.element_at(starts, -1) + F.col("size_us")
        return F.when(opens, F.concat(starts, F.array(t))).otherwise(starts)

    openers = per_key.select(
        "_g", F.explode(F.aggregate("times", F.slice("times", 1, 1), scan)).alias("us")
    ).select("_g", "us", F.col("us").alias("opener"))
    marked = rows.drop("size_us").join(openers, on=["_g", "us"], how="left")
    so_far = Window.partitionBy("_g").orderBy("us").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    assigned = marked.withColumn("start_us", F.last("opener", ignorenulls=True).over(so_far))
    if hours is not None:
        wanted = sorted({int(h.timestamp()) // 3600 for h in hours})
        assigned = assigned.where(F.floor(F.col("start_us") / F.lit(HOUR_MICROS)).isin(*wanted))
    return assigned.select(
        "metric",
        "aggregate",
        "window",
        F.timestamp_micros("start_us").alias("bucket_start"),
        "key",
        "item",
        "text",
        "num",
        "ord",
        "scope",
        "limit",
    )


def _ranked(frame: DataFrame, score: str) -> DataFrame:
    group = Window.partitionBy("metric", "window", "bucket_start", "key").orderBy(
        F.col(score).desc(), F.col("item").asc()
    )
    ranked = frame.withColumn("rank", F.row_number().over(group))
    return ranked.where(F.col("rank") <= F.col("limit"))


def aggregate_contributions(contributed: DataFrame) -> DataFrame:
    """Exact aggregates of the contributions, one row per value (``METRIC_COLUMNS``).

    Two shuffles for every aggregate but co-occurrence: a group by (bucket, key, item), then one
    window per (bucket, key) that ranks items and counts distinct ones. Branching per aggregate
    instead would scan the contributions once per branch (filters are pushed below the group by).
    """
    bucket = ["metric", "aggregate", "window", "bucket_start", "key"]
    aggregate = F.col("aggregate")
    # co-occurrence also groups by scope (null for the others), giving each scope's distinct items
    grouped = contributed.groupBy(*bucket, "item", "scope").agg(
        F.sum("num").alias("total"),
        F.min("num").alias("low"),
        F.max("num").alias("high"),
        F.max_by(F.struct("text", "num"), F.struct("ord", "text", "num")).alias("latest"),
        F.max("ord").alias("newest"),
        F.first("limit").alias("limit"),
    )
    plain = grouped.where(aggregate != "co_occurrence").withColumn(
        "score", F.when(aggregate == "top_k", F.col("total")).when(aggregate == "last_n", F.col("newest"))
    )
    per_key = Window.partitionBy("metric", "window", "bucket_start", "key")
    ranked = plain.withColumn(
        "rank", F.row_number().over(per_key.orderBy(F.col("score").desc_nulls_last(), F.col("item").asc()))
    ).withColumn("distinct_items", F.count("*").over(per_key))
    is_ranked = aggregate.isin(*_RANKED)
    kept = ranked.where(
        aggregate.isin("count", "sum", "min", "max", "last")
        | ((aggregate == "count_distinct") & (F.col("rank") == 1))
        | (is_ranked & (F.col("rank") <= F.col("limit")))
    )
    values = kept.select(
        *bucket,
        F.when(aggregate == "last", F.col("latest.text")).when(is_ranked, F.col("item")).alias("item"),
        F.when(is_ranked, F.col("rank")).alias("rank"),
        F.when(aggregate.isin("count", "sum"), F.col("total"))
        .when(aggregate == "min", F.col("low"))
        .when(aggregate == "max", F.col("high"))
        .when(aggregate == "last", F.col("latest.num"))
        .when(aggregate == "count_distinct", F.col("distinct_items").cast("double"))
        .otherwise(F.col("score"))
        .alias("value"),
    )
    pairs = _co_occurrence(grouped.where(aggregate == "co_occurrence"), bucket)
    return values.unionByName(pairs).select(*METRIC_COLUMNS)


def _co_occurrence(grouped: DataFrame, bucket: list[str]) -> DataFrame:
    """Pairs of items held by one scope value; ``grouped`` has one row per (bucket, key, item, scope)."""
    held = grouped.select(*bucket, "scope", "item", "limit")
    other = held.select(*bucket, "scope", F.col("item").alias("other"))
    pairs = held.join(other, on=[*bucket, "scope"], how="inner").where(F.col("item") != F.col("other"))
    counted = pairs.groupBy(*bucket, "item", "other").agg(
        F.count("*").cast("double").alias("together"), F.first("limit").alias("limit")
    )
    keyed = counted.select(
        "metric",
        "aggregate",
        "window",
        "bucket_start",
        F.concat("key", F.array("item")).alias("key"),
        F.col("other").alias("item"),
        "together",
        "limit",
    )
    return _ranked(keyed, "together").select(*bucket, "item", "rank", F.col("together").alias("value"))


def metric_values(
    events: DataFrame,
    catalogue: Catalogue,
    grain: Grain,
    context: DataFrame | None = None,
    hours: Sequence[datetime] | None = None,
) -> DataFrame:
    """Clean events → the grain's curated metric table (without partition columns)."""
    return aggregate_contributions(contributions(events, batch_metrics(catalogue), grain, context, hours))


def stagger_context_hours(catalogue: Catalogue, interval: Sequence[datetime]) -> list[datetime]:
    """The hours around an interval whose events the stagger windows of its hours depend on.

    After it: enough hours to cover the longest window that starts in its last hour. Before it:
    four times the longest window, at least an hour, in which each key's windows are re-derived
    from scratch; exact when the key paused for a window's length in that time (see docs/metrics.md).
    """
    sizes = [m.stagger_seconds for m in batch_metrics(catalogue) if m.is_stagger]
    if not sizes or not interval:
        return []
    hour = HOUR_MICROS // MICROS
    after = -(-max(sizes) // hour)
    before = max(1, -(-4 * max(sizes) // hour))
    inside = set(interval)
    first, last = min(interval), max(interval)
    around = [first - timedelta(hours=n) for n in range(before, 0, -1)]
    around += [last + timedelta(hours=n) for n in range(1, after + 1)]
    return [h for h in around if h not in inside]
