"""The Spark compiler of the catalogue equals the speed layer's reading (``evaluate.contributions``).

The same events go to both: plain Python aggregates ``contributions`` per window bucket, Spark runs
the compiled aggregation; every batch metric must give the same values (count_distinct exact).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pyspark.sql import DataFrame, SparkSession

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.contract import EventValidator
from lambdalake.metrics.catalogue import Catalogue, Metric, load_catalogue, parse_catalogue
from lambdalake.metrics.evaluate import (
    MICROS,
    assign_stagger,
    bucket_start,
    contributions,
    event_time_s,
    field_value,
    micros,
)
from spark_jobs.compile_metrics import (
    GRAIN_SECONDS,
    NotCompilable,
    _windows,
    batch_metrics,
    compile_metrics,
    metric_values,
    stagger_context_hours,
    unsupported_windows,
)
from tests.spark_fixtures import spark

__all__ = ["spark"]
pytestmark = pytest.mark.slow

EXTRA = """
metrics:
  - name: user_products_stagger
    description: Distinct products a user viewed or carted, in five-minute stagger windows per type.
    filter: {event_type: [product_view, add_to_cart]}
    by: [user, event_type]
    aggregate: count_distinct
    field: properties.product_id
    stagger: 5m
  - name: user_spend_stagger
    description: A user's spend in 30-minute stagger windows (odd amounts skipped as everywhere).
    filter: {event_type: purchase}
    by: [user]
    aggregate: sum
    field: properties.amount
    stagger: 30m
  - name: big_orders
    description: Purchases above 100, paid by card or paypal, with a promo field present.
    filter:
      event_type: purchase
      where:
        - {field: properties.amount, op: ">", value: 100}
        - {field: properties.payment_method, op: in, value: [card, paypal]}
        - {field: context.country, op: "!=", value: US}
    aggregate: count
    windows: [1h, 1d]
  - name: distinct_amounts
    description: Distinct amounts, 1 and 1.0 alike, "1" apart.
    aggregate: count_distinct
    field: properties.amount
    windows: [1h]
  - name: max_price_by_flag
    description: Highest item price by a boolean flag.
    filter: {event_type: purchase}
    explode: properties.items
    by: [item.gift]
    aggregate: max
    field: item.price
    windows: [1h]
  - name: min_quantity
    description: Smallest quantity added per category, from 'b' on.
    filter:
      event_type: add_to_cart
      where: [{field: properties.category, op: ">=", value: b}, {field: properties.quantity, op: exists}]
    by: [properties.category]
    aggregate: min
    field: properties.quantity
    windows: [2h]
  - name: last_search
    description: The latest search query.
    filter: {event_type: search}
    aggregate: last
    field: properties.query
    windows: [1h]
  - name: recent_products
    description: Recently viewed products, batch on.
    filter: {event_type: product_view}
    aggregate: last_n
    item: properties.product_id
    n: 3
    windows: [1h]
  - name: null_promo_orders
    description: Orders without a promo code.
    filter:
      event_type: purchase
      where: [{field: properties.promo_code, op: "==", value: null}]
    aggregate: sum
    field: properties.amount
    windows: [1h]
"""


def _events() -> list[dict[str, Any]]:
    """Generated events (about two hours, the lake's valid ones, duplicates kept) plus odd values."""
    config = GeneratorConfig(events=1200, seed=7, events_per_s=0.3, malformed_rate=0.0)
    validator = EventValidator()
    events = [e for e in map(orjson.loads, ClickstreamGenerator(config).lines()) if not validator.validate(e)]
    odd = {
        "event_type": "purchase",
        "user_id": None,
        "anonymous_id": "anon-odd",
        "session_id": None,
        "ts": "2026-01-01T00:30:00.123Z",
        "context": {"country": "FR"},
    }
    items = [
        {"product_id": "P-odd", "quantity": 2, "price": 500.5, "gift": True},
        {"product_id": "P-odd2", "quantity": "3", "price": 1, "gift": False},
        "not an item",
        {"product_id": None, "quantity": 1.0, "price": 2},
    ]
    amounts = ["12", 1, 1.0, "1", True, None, 250]
    for n, amount in enumerate(amounts):
        properties = {"order_id": f"o-{n}", "amount": amount, "items": items, "payment_method": "paypal"}
        if n % 2:
            properties["promo_code"] = None
        events.append({**odd, "event_id": f"odd-{n}", "properties": properties})
    events.append({**odd, "event_id": "odd-items", "properties": {"items": {"not": "a list"}, "amount": 3}})
    return events


def _frame(spark: SparkSession, events: list[dict[str, Any]]) -> DataFrame:
    rows = [
        (
            e["event_id"],
            e["event_type"],
            e.get("user_id"),
            e.get("anonymous_id"),
            e.get("session_id"),
            datetime.fromtimestamp(event_time_s(e), UTC),
            json.dumps(e["properties"]),
            json.dumps(e.get("context")) if e.get("context") is not None else None,
        )
        for e in events
    ]
    schema = (
        "event_id string, event_type string, user_id string, anonymous_id string, session_id string, "
        "ts timestamp, properties string, context string"
    )
    return spark.createDataFrame(rows, schema)


def _ranked(scores: dict[str, float], limit: int) -> list[tuple[str, int, float]]:
    ordered = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:limit]
    return [(item, rank, score) for rank, (item, score) in enumerate(ordered, start=1)]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stagger_groups(
    metric: Metric, events: list[dict[str, Any]]
) -> dict[tuple[Any, ...], list[tuple[Any, float, float, Any]]]:
    """Stagger contributions grouped by window: per key in event-time order, ``assign_stagger``."""
    label, size = metric.stagger_label, metric.stagger_seconds * MICROS
    per_key: dict[tuple[str, ...], list[tuple[int, Any, float, float]]] = defaultdict(list)
    for event in events:
        t = event_time_s(event)
        for c in contributions(metric, event):
            per_key[c.key].append((micros(t), c.value, c.weight, t))
    groups: dict[tuple[Any, ...], list[tuple[Any, float, float, Any]]] = defaultdict(list)
    for key, rows in per_key.items():
        rows.sort(key=lambda r: r[0])
        for start, (_, value, weight, t) in zip(
            assign_stagger([r[0] for r in rows], size), rows, strict=True
        ):
            groups[(metric.name, label, EPOCH + timedelta(microseconds=start), key)].append(
                (value, weight, t, None)
            )
    return groups


def python_values(metric: Metric, events: list[dict[str, Any]], grain: str) -> set[tuple[Any, ...]]:
    """The metric aggregated in plain Python from ``evaluate.contributions``: the reference."""
    groups: dict[tuple[Any, ...], list[tuple[Any, float, float, Any]]] = defaultdict(list)
    if metric.is_stagger:
        groups = stagger_groups(metric, events) if _windows(metric, grain) else {}  # type: ignore[arg-type]
    for event in events if not metric.is_stagger else ():
        t = event_time_s(event)
        scope = field_value(event, metric.scope) if metric.scope else None
        for c in contributions(metric, event):
            if metric.scope and scope is None:
                continue
            for label, size in _windows(metric, grain):  # type: ignore[arg-type]
                groups[
                    (metric.name, label, datetime.fromtimestamp(bucket_start(t, size), UTC), c.key)
                ].append((c.value, c.weight, t, scope))
    out: set[tuple[Any, ...]] = set()
    for (name, label, bucket, key), rows in groups.items():
        head = (name, label, bucket, key)
        values = [v for v, _, _, _ in rows]
        aggregate = metric.aggregate
        if aggregate in ("count", "sum", "min", "max", "count_distinct"):
            value = {
                "count": len,
                "sum": lambda vs: sum(float(v) for v in vs),
                "min": min,
                "max": max,
                "count_distinct": lambda vs: len(set(vs)),
            }[aggregate](values)
            out.add((*head, None, None, round(float(value), 6)))
        elif aggregate == "last":
            value, _, _, _ = max(rows, key=lambda r: (r[2], str(r[0])))
            number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
            out.add((*head, str(value), None, number))
        elif aggregate in ("top_k", "last_n"):
            scores: dict[str, float] = defaultdict(float)
            for value, weight, t, _ in rows:
                item = str(value)
                scores[item] = (
                    scores[item] + weight if aggregate == "top_k" else max(scores.get(item, 0.0), t)
                )
            limit = metric.k if aggregate == "top_k" else metric.n
            out |= {(*head, item, rank, round(score, 6)) for item, rank, score in _ranked(scores, limit)}
        elif aggregate == "co_occurrence":
            by_scope: dict[Any, set[str]] = defaultdict(set)
            for value, _, _, scope in rows:
                by_scope[scope].add(str(value))
            together: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for items in by_scope.values():
                for a in items:
                    for b in items - {a}:
                        together[a][b] += 1
            for a, scores in together.items():
                out |= {
                    (name, label, head[2], (*key, a), b, rank, score)
                    for b, rank, score in _ranked(scores, metric.k)
                }
    return out


def spark_values(frame: DataFrame) -> set[tuple[Any, ...]]:
    out = set()
    for row in frame.collect():
        value = None if row["value"] is None else round(row["value"], 6)
        bucket = row["bucket_start"].astimezone(UTC)
        out.add((row["metric"], row["window"], bucket, tuple(row["key"]), row["item"], row["rank"], value))
    return out


def _catalogue() -> Catalogue:
    builtin = load_catalogue()
    extra = parse_catalogue([("extra.yaml", EXTRA)])
    return Catalogue(builtin.metrics + extra.metrics)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return _events()


@pytest.fixture(scope="module")
def computed(spark: SparkSession, events: list[dict[str, Any]]) -> dict[str, set[tuple[Any, ...]]]:
    """Spark's values of the whole catalogue at both grains, computed once for the module."""
    frame = _frame(spark, events).cache()
    return {grain: spark_values(metric_values(frame, _catalogue(), grain)) for grain in ("hour", "day")}  # type: ignore[arg-type]


@pytest.mark.parametrize("grain", ["hour", "day"])
def test_spark_equals_the_speed_layers_reading_for_every_batch_metric(
    computed: dict[str, set[tuple[Any, ...]]], events: list[dict[str, Any]], grain: str
) -> None:
    catalogue = _catalogue()
    metrics = compile_metrics(batch_metrics(catalogue), grain)  # type: ignore[arg-type]
    builtin_names = {m.name for m in batch_metrics(load_catalogue())}
    if grain == "hour":
        assert builtin_names <= {m.name for m in metrics}  # every built-in batch metric has an hourly table
    assert len(metrics) > 5
    for metric in metrics:
        expected = python_values(metric, events, grain)
        got = {row for row in computed[grain] if row[0] == metric.name}
        assert expected, f"{metric.name}: the fixture exercises no contribution"
        assert got == expected, f"{metric.name}: {sorted(got ^ expected, key=str)[:6]}"
    assert {row[0] for row in computed[grain]} == {m.name for m in metrics}


def test_the_odd_values_follow_pythons_semantics(computed: dict[str, set[tuple[Any, ...]]]) -> None:
    """Spot checks of the quirks the equality test relies on, stated as facts."""
    bucket = datetime(2026, 1, 1, 0, tzinfo=UTC)
    hourly = {r for r in computed["hour"] if r[1] == "1h" and r[2] == bucket}
    # "12", "1", True and None are not amounts; 1, 1.0 (and True, as in Python) are one value
    distinct = {r for r in hourly if r[0] == "distinct_amounts"}
    assert len(distinct) == 1
    assert next(iter(distinct))[6] > 3
    gifts = {r[3]: r[6] for r in hourly if r[0] == "max_price_by_flag"}
    assert gifts[("True",)] == 500.5
    assert gifts[("False",)] >= 1.0
    big = [r for r in hourly if r[0] == "big_orders"]
    assert big[0][6] >= 1  # the 250 paypal order from FR


def test_entries_that_cannot_be_compiled_faithfully_are_refused() -> None:
    text = """
metrics:
  - {name: by_time, description: d, by: [ts], aggregate: count, windows: [1h]}
  - {name: weekly, description: d, aggregate: count, windows: [7d]}
"""
    catalogue = parse_catalogue([("x.yaml", text)])
    with pytest.raises(NotCompilable, match="ts"):
        compile_metrics([catalogue["by_time"]], "hour")
    assert compile_metrics([catalogue["weekly"]], "day") == []
    assert unsupported_windows(catalogue) == {"weekly": ["7d"]}
    assert unsupported_windows(load_catalogue()) == {}
    assert GRAIN_SECONDS == {"hour": 3600, "day": 86400}


def _page_view(user: str, ts: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"pv-{user}-{n}",
        "event_type": "page_view",
        "user_id": user,
        "anonymous_id": None,
        "session_id": "s",
        "ts": ts,
        "properties": {"path": "/"},
        "context": {},
    }


def test_stagger_windows_of_an_hour_read_the_hours_around_it(spark: SparkSession) -> None:
    """A window opened before the hour takes the hour's first events; one opened in the hour's last
    minute takes events of the next hour; both decided from the context, only the hour's kept."""
    catalogue = load_catalogue()
    hour = datetime(2026, 1, 1, 10, tzinfo=UTC)
    before = [_page_view("u1", "2026-01-01T09:59:50Z", 0)]
    inside = [
        _page_view("u1", "2026-01-01T10:00:20Z", 1),  # in 09:59:50's window: opens nothing
        _page_view("u1", "2026-01-01T10:00:50.5Z", 2),  # opens [10:00:50.5, 10:01:50.5)
        _page_view("u2", "2026-01-01T10:59:30Z", 3),  # opens [10:59:30, 11:00:30)
    ]
    after = [
        _page_view("u2", "2026-01-01T11:00:10Z", 4),  # in 10:59:30's window
        _page_view("u2", "2026-01-01T11:00:40Z", 5),  # opens a window of 11:00: not this hour's
    ]
    context_hours = stagger_context_hours(catalogue, [hour])
    assert context_hours == [hour - timedelta(hours=1), hour + timedelta(hours=1)]
    values = metric_values(
        _frame(spark, inside), catalogue, "hour", _frame(spark, before + after), [hour]
    ).where("metric = 'user_page_views_stagger'")
    got = {(tuple(r["key"]), r["bucket_start"].astimezone(UTC), r["value"]) for r in values.collect()}
    assert got == {
        (("u1",), datetime(2026, 1, 1, 10, 0, 50, 500000, tzinfo=UTC), 1.0),
        (("u2",), datetime(2026, 1, 1, 10, 59, 30, tzinfo=UTC), 2.0),
    }
    assert {r["window"] for r in values.collect()} == {"stagger_1m"}
    # without context the hour's events alone decide: 10:00:20 opens a window of its own
    alone = metric_values(_frame(spark, inside), catalogue, "hour").where(
        "metric = 'user_page_views_stagger'"
    )
    assert sorted(r["value"] for r in alone.collect()) == [1.0, 2.0]
    assert len(alone.collect()) == 2
    # stagger windows are hourly only, and no window is "unsupported"
    assert stagger_context_hours(catalogue, []) == []
    assert compile_metrics([catalogue["user_page_views_stagger"]], "day") == []
