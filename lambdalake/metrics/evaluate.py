"""How one event feeds a metric, in pure Python: the speed layer's reading of the catalogue.

The batch layer reads the same entries into Spark column expressions; tests feed both the same
events and compare, so the two readings cannot drift apart silently.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lambdalake.metrics.catalogue import Condition, Metric, is_number

_MISSING = object()


def field_value(event: Mapping[str, Any], path: str, item: Mapping[str, Any] | None = None) -> Any:
    """The value at a field path, or None when the event does not carry it."""
    if path == "user":
        return event.get("user_id") or event.get("anonymous_id")
    head, _, name = path.partition(".")
    if not name:
        return event.get(head)
    container = item if head == "item" else event.get(head)
    return container.get(name) if isinstance(container, Mapping) else None


def holds(condition: Condition, value: Any) -> bool:
    """Whether a filter condition holds for a value (shared by the speed compiler)."""
    op, expected = condition.op, condition.value
    if op == "exists":
        return value is not None
    if op == "in":
        return value in (expected or ())
    if op == "==":
        return value == expected
    if op == "!=":
        return value != expected
    if value is None or expected is None:
        return False
    try:
        return {
            ">": value > expected,
            ">=": value >= expected,
            "<": value < expected,
            "<=": value <= expected,
        }[op]
    except TypeError:  # comparing a string with a number: the condition does not hold
        return False


def matches(metric: Metric, event: Mapping[str, Any], item: Mapping[str, Any] | None = None) -> bool:
    types = metric.filter.event_type
    if types and event.get("event_type") not in types:
        return False
    return all(holds(c, field_value(event, c.field, item)) for c in metric.filter.where)


def event_time_s(event: Mapping[str, Any]) -> float:
    """Event time in epoch seconds (the contract guarantees an RFC 3339 `ts` with an offset)."""
    return datetime.fromisoformat(str(event["ts"]).replace("z", "Z")).timestamp()


def bucket_start(ts_s: float, size_s: int) -> int:
    """Start of the tumbling window of ``size_s`` seconds holding ``ts_s`` (epoch-aligned, UTC)."""
    return int(ts_s // size_s) * size_s


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one event (or one exploded item of it) adds to a metric, before windowing."""

    key: tuple[str, ...]  # the `by` values, as strings
    value: Any  # field value (sum/min/max/last/count_distinct), item (top_k/last_n/co_occurrence), or 1
    weight: float  # top_k weight; 1 otherwise


def contributions(metric: Metric, event: Mapping[str, Any]) -> Iterator[Contribution]:
    """Every contribution of an event to an aggregated metric (none if the filter rejects it).

    An event lacking a `by` field or the aggregated value contributes nothing: a sum of amounts
    skips events without an amount rather than guessing zero.
    """
    if metric.is_derived:
        return
    items: list[Mapping[str, Any] | None] = [None]
    if metric.explode:
        array = field_value(event, metric.explode)
        items = [i for i in array if isinstance(i, Mapping)] if isinstance(array, list) else []
    for item in items:
        if not matches(metric, event, item):
            continue
        key_values = [field_value(event, path, item) for path in metric.by]
        if any(v is None for v in key_values):
            continue
        key = tuple(str(v) for v in key_values)
        aggregate = metric.aggregate
        if aggregate == "count":
            yield Contribution(key, 1, 1.0)
            continue
        path = metric.value_path
        assert path is not None  # the catalogue model guarantees it
        value = field_value(event, path, item)
        if value is None:
            continue
        if aggregate == "sum" and not is_number(value):
            continue
        if path == "ts":
            value = event_time_s(event)
        weight = 1.0
        if metric.weight:
            raw = field_value(event, metric.weight, item)
            if not is_number(raw):
                continue
            weight = float(raw)
        yield Contribution(key, value, weight)


# --- stagger windows -------------------------------------------------------------------------------
# Times are integer microseconds since the epoch (the precision of `ts` and of Spark timestamps), so
# both layers compare the same integers: an event exactly `size` after a window's start opens the next.
MICROS = 1_000_000


def micros(ts_s: float) -> int:
    """Event time in epoch microseconds (exact for any `ts` with at most microsecond digits)."""
    return round(ts_s * MICROS)


def stagger_window(starts: list[int], t: int, size: int, watermark: int | None = None) -> int | None:
    """The start of the stagger window of one key that takes an event at ``t``; None when it is late.

    ``starts`` are the key's window starts known so far, sorted (updated in place when the event opens
    a window). The event goes to the latest window starting at or before it if that window covers it
    (``start <= t < start + size``), else it opens a window ``[t, t + size)``. Fed a key's events in
    event-time order this is the greedy assignment of the batch layer (``assign_stagger``); fed them
    in arrival order, as the speed layer is, it differs only for events that arrive after a window
    starting later than themselves (docs/metrics.md, "Stagger windows").

    With a ``watermark`` (speed layer), windows ending at or before it are closed: an event whose own
    window ``[t, t + size)`` would be closed is late (it neither joins nor opens a window); an event
    whose covering window is closed while its own would not be opens its own, as Kinesis Analytics
    opens a new window for a row of a key whose window has closed. So an event is late for a stagger
    window only if it would be late for a tumbling window of the same size. Every window that could
    take an event at ``t`` starts after ``t - size``, so starts older than the watermark minus twice
    the size never change a decision.
    """
    if watermark is not None and t + size <= watermark:
        return None
    i = bisect_right(starts, t)
    if i and t < starts[i - 1] + size and (watermark is None or starts[i - 1] + size > watermark):
        return starts[i - 1]
    starts.insert(i, t)
    return t


def assign_stagger(times: Iterable[int], size: int) -> list[int]:
    """The window start of each event time of one key, given in event-time order (the batch reading)."""
    starts: list[int] = []
    out = []
    for t in times:
        start = stagger_window(starts, t, size)
        assert start is not None  # without a watermark every event has a window
        out.append(start)
    return out
