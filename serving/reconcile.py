"""Reconciliation: one answer per metric and bucket, batch where batch has landed, speed after that.

For every catalogue metric, by name (docs/serving.md has the user's version of these rules):

- **minute / hour points**: a bucket whose hour is within the batch boundary (the first published
  hour up to the batch watermark, ``batch_view.Boundary``) comes from the batch view
  (``agg_metrics_hourly_v1``, window ``1m`` / ``1h``), every other bucket from the speed view
  (Redis). Each bucket has exactly one source: no gap, no overlap. The boundary is re-read at most
  every ``serving_watermark_cache_s``, so it moves forward as soon as an hour is published and back
  as soon as an hour is marked for reprocessing (the watermark is contiguous, batch/watermark.py).
- **day points**: ``agg_metrics_daily_v1`` when every hour of the day is within the boundary and
  the table has the day; else, for aggregates that combine over hours (count, sum, min, max and
  formulas of them), the day's batch hours plus its speed hours (``source: mixed`` when both
  contribute); else (count_distinct, last, top_k) the speed layer's own ``1d`` bucket
  (HyperLogLog for count_distinct: ``approximate``). A day with no published hour is read from the
  speed ``1d`` bucket, which also holds events too late for their hour but in time for the day.
- **derived metrics** (``formula``) evaluate over their inputs reconciled for the same bucket; the
  point's source is its inputs' (``mixed`` if they differ, ``unavailable`` if one is).
- **lifetime metrics** (a user's totals): the speed layer keeps one running value with no split by
  hour, so it cannot be cut at the watermark. The speed value is the answer (it is complete:
  late events still count in lifetime series); when Redis is down, or the speed key has expired,
  the batch layer's hourly partials over the published hours are combined instead (sum of counts
  and sums, min of mins, max of maxes) and the answer says ``source: batch``.

Degradation: the warehouse down → every bucket from speed, and ``degraded`` says why; Redis down →
published buckets from batch and the rest ``unavailable`` (value null). Engines are called with the
serving timeouts behind breakers (serving/engines.py), so neither a 500 nor a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, Metric, evaluate_formula, load_catalogue
from lambdalake.settings import Settings
from serving.batch_view import NO_BATCH, BatchView, Boundary, Row
from serving.engines import EngineUnavailable, RedisEngine, WarehouseEngine
from serving.speed_view import SCALAR, SpeedView
from serving.times import DAY_S, GRANULARITY_S, GRANULARITY_WINDOW, HOUR_S, ceil, floor, iso

log = logging.getLogger(__name__)

BATCH, SPEED, MIXED, UNAVAILABLE = "batch", "speed", "mixed", "unavailable"
COMBINE: dict[str, Callable[[Iterable[float]], float]] = {"count": sum, "sum": sum, "min": min, "max": max}
FUNNEL_STEPS = (
    ("product_view", "product_views"),
    ("add_to_cart", "add_to_carts"),
    ("checkout_started", "checkouts"),
    ("purchase", "orders"),
)
Key = Sequence[str]


class QueryError(ValueError):
    """A request the catalogue cannot answer as asked (the API's 422, with this message)."""


class UnknownMetric(KeyError):
    """No such metric in the catalogue (the API's 404)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Point:
    start: int
    value: float | None
    source: str
    approximate: bool = False
    items: list[tuple[str, float]] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "start": iso(self.start),
            "value": self.value,
            "source": self.source,
            "approximate": self.approximate,
        }
        if self.items is not None:
            body["items"] = [{"item": i, "score": s} for i, s in self.items]
        return body


class Degraded(list[str]):
    """Reasons an answer is degraded, each once, in order."""

    def add(self, reason: str | BaseException) -> None:
        text = str(reason)
        if text not in self:
            self.append(text)


@dataclass
class Series:
    metric: str
    granularity: str
    start: int
    end: int
    watermark: int | None
    points: list[Point]
    degraded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "granularity": self.granularity,
            "start": iso(self.start),
            "end": iso(self.end),
            "watermark": None if self.watermark is None else iso(self.watermark),
            "points": [p.to_json() for p in self.points],
            "degraded": list(self.degraded),
        }


@dataclass
class LifetimeValue:
    value: float | None
    source: str
    approximate: bool = False


def combine_sources(sources: Iterable[str]) -> str:
    found = set(sources)
    if UNAVAILABLE in found:
        return UNAVAILABLE
    if len(found) == 1:
        return found.pop()
    return MIXED if found else SPEED


def combine_values(aggregate: str, values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return COMBINE[aggregate](present) if present else None


class Reconciler:
    """Answers catalogue metrics by name from the batch and speed views (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisEngine | None = None,
        warehouse: WarehouseEngine | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue or load_catalogue(settings.metric_catalogues)
        self.redis = redis or RedisEngine(settings)
        self.warehouse = warehouse or WarehouseEngine(settings)
        self.batch = BatchView(settings, self.warehouse)
        self.speed = SpeedView(settings, self.redis, self.catalogue)

    def close(self) -> None:
        self.redis.close()
        self.warehouse.close()

    # --- metadata ------------------------------------------------------------------------------
    def metric(self, name: str) -> Metric:
        try:
            return self.catalogue[name]
        except KeyError:
            raise UnknownMetric(f"no metric {name!r} in the catalogue") from None

    def boundary(self, degraded: Degraded | None = None) -> Boundary:
        """The hours batch answers now; with the warehouse down, none (and ``degraded`` says so)."""
        try:
            return self.batch.boundary()
        except EngineUnavailable as exc:
            if degraded is not None:
                degraded.add(exc)
            return NO_BATCH

    def _base_aggregates(self, metric: Metric) -> list[Metric]:
        if not metric.is_derived:
            return [metric]
        return [self.catalogue[n] for n in metric.formula_inputs()]

    def check(self, metric: Metric, granularity: str, key: Key) -> None:
        """QueryError unless the metric can be answered at this granularity for this key."""
        if len(key) != len(metric.by):
            wanted = ", ".join(metric.by) or "none"
            raise QueryError(
                f"metric {metric.name} takes {len(metric.by)} key value(s) ({wanted}): "
                f"give `key` once per `by` component, got {len(key)}"
            )
        if metric.is_lifetime:
            raise QueryError(
                f"metric {metric.name} is a lifetime metric (no time buckets): "
                "read it through /v1/users/{id}/profile or Reconciler.lifetime()"
            )
        if getattr(metric, "is_stagger", False):
            raise QueryError(
                f"metric {metric.name} has stagger windows (opened per key by its events), "
                "not the fixed buckets a minute/hour/day series needs"
            )
        if granularity not in GRANULARITY_S:
            raise QueryError(f"granularity must be one of {', '.join(GRANULARITY_S)}, not {granularity!r}")
        for base in self._base_aggregates(metric):
            if base.aggregate not in (*SCALAR, "top_k"):
                raise QueryError(f"metric {metric.name} is a {base.aggregate}: it has no time series")
            window = GRANULARITY_WINDOW[granularity]
            if granularity == "day":
                if window in base.windows or (base.aggregate in COMBINE and "1h" in base.windows):
                    continue
            elif window in base.windows:
                continue
            raise QueryError(
                f"metric {metric.name} has no {window} window (it has {', '.join(metric.windows)}): "
                f"granularity {granularity} is not available"
            )

    # --- time series ---------------------------------------------------------------------------
    def series(self, name: str, start: int, end: int, granularity: str = "hour", key: Key = ()) -> Series:
        """One point per ``granularity`` bucket overlapping [start, end) (epoch seconds)."""
        metric = self.metric(name)
        key = tuple(key)
        self.check(metric, granularity, key)
        if start >= end:
            raise QueryError("start must be before end")
        size = GRANULARITY_S[granularity]
        first, last = floor(start, size), ceil(end, size)
        count = (last - first) // size
        if count > self.settings.serving_max_points:
            raise QueryError(
                f"{count} {granularity} points asked, at most {self.settings.serving_max_points}: "
                "narrow the range or use a coarser granularity"
            )
        degraded = Degraded()
        boundary = self.boundary(degraded)
        buckets = list(range(first, last, size))
        points = self._points(metric, granularity, buckets, key, boundary, degraded)
        return Series(
            name, granularity, first, last, boundary.watermark, [points[b] for b in buckets], degraded
        )

    def _points(
        self,
        metric: Metric,
        granularity: str,
        buckets: list[int],
        key: Key,
        boundary: Boundary,
        degraded: Degraded,
    ) -> dict[int, Point]:
        if not metric.is_derived:
            if not metric.batch:  # `batch: false`: the batch layer never computes it, speed is all there is
                boundary = NO_BATCH
            if granularity == "day":
                return self._days(metric, buckets, key, boundary, degraded)
            return self._buckets(metric, GRANULARITY_WINDOW[granularity], buckets, key, boundary, degraded)
        inputs = {
            n: self._points(self.catalogue[n], granularity, buckets, key, boundary, degraded)
            for n in metric.formula_inputs()
        }
        points = {}
        for b in buckets:
            parts = {n: p[b] for n, p in inputs.items()}
            source = combine_sources(p.source for p in parts.values())
            approximate = any(p.approximate for p in parts.values())
            value = None
            if source != UNAVAILABLE:
                value = evaluate_formula(metric.formula or "", {n: p.value for n, p in parts.items()})
            points[b] = Point(b, value, source, approximate)
        return points

    def _batch_point(self, metric: Metric, bucket: int, rows: list[Row]) -> Point:
        if metric.aggregate == "top_k":
            ranked = sorted(rows, key=lambda r: (r.rank or 0, r.item or ""))
            return Point(bucket, None, BATCH, False, [(r.item or "", r.value or 0.0) for r in ranked])
        return Point(bucket, rows[0].value if rows else None, BATCH)

    def _speed_points(self, metric: Metric, window: str, buckets: list[int], key: Key) -> dict[int, Point]:
        """Raises EngineUnavailable when Redis is down."""
        if metric.aggregate == "top_k":
            tops = self.speed.tops(metric, window, buckets, key)
            return {b: Point(b, None, SPEED, False, tops[b]) for b in buckets}
        values = self.speed.scalars(metric, window, buckets, key)
        approximate = metric.aggregate == "count_distinct"
        return {b: Point(b, values[b], SPEED, approximate) for b in buckets}

    def _speed_or_unavailable(
        self, metric: Metric, window: str, buckets: list[int], key: Key, degraded: Degraded
    ) -> dict[int, Point]:
        if not buckets:
            return {}
        try:
            return self._speed_points(metric, window, buckets, key)
        except EngineUnavailable as exc:
            degraded.add(exc)
            items = [] if metric.aggregate == "top_k" else None
            return {b: Point(b, None, UNAVAILABLE, False, items) for b in buckets}

    def _buckets(
        self,
        metric: Metric,
        window: str,
        buckets: list[int],
        key: Key,
        boundary: Boundary,
        degraded: Degraded,
    ) -> dict[int, Point]:
        """Minute or hour buckets: each from batch if its hour is within the boundary, else speed."""
        size = GRANULARITY_S["minute" if window == "1m" else "hour"]
        in_batch = [b for b in buckets if boundary.covers(floor(b, HOUR_S))]
        from_speed = [b for b in buckets if not boundary.covers(floor(b, HOUR_S))]
        points: dict[int, Point] = {}
        if in_batch:
            try:
                rows = self.batch.rows([metric.name], window, key, in_batch[0], in_batch[-1] + size)
                points.update(
                    {b: self._batch_point(metric, b, rows.get((metric.name, b), [])) for b in in_batch}
                )
            except EngineUnavailable as exc:
                degraded.add(exc)
                from_speed = sorted(from_speed + in_batch)
        points.update(self._speed_or_unavailable(metric, window, from_speed, key, degraded))
        return points

    def _days(
        self, metric: Metric, days: list[int], key: Key, boundary: Boundary, degraded: Degraded
    ) -> dict[int, Point]:
        hours = {d: list(range(d, d + DAY_S, HOUR_S)) for d in days}
        whole = [d for d in days if all(boundary.covers(h) for h in hours[d])]
        touched = {d for d in days if any(boundary.covers(h) for h in hours[d])}
        points: dict[int, Point] = {}
        if whole and "1d" in metric.windows:
            try:
                rows = self.batch.rows([metric.name], "1d", key, whole[0], whole[-1] + DAY_S, daily=True)
                for d in whole:
                    if (metric.name, d) in rows:
                        points[d] = self._batch_point(metric, d, rows[(metric.name, d)])
            except EngineUnavailable as exc:
                degraded.add(exc)
        combinable = metric.aggregate in COMBINE and "1h" in metric.windows
        by_hours = [
            d for d in days if d not in points and combinable and (d in touched or "1d" not in metric.windows)
        ]
        by_speed_day = [d for d in days if d not in points and d not in by_hours]
        points.update(self._speed_or_unavailable(metric, "1d", by_speed_day, key, degraded))
        if by_hours:
            points.update(self._days_from_hours(metric, by_hours, hours, key, boundary, degraded))
        return points

    def _days_from_hours(
        self,
        metric: Metric,
        days: list[int],
        hours: dict[int, list[int]],
        key: Key,
        boundary: Boundary,
        degraded: Degraded,
    ) -> dict[int, Point]:
        wanted = sorted(h for d in days for h in hours[d])
        parts = self._buckets(metric, "1h", wanted, key, boundary, degraded)
        assert metric.aggregate is not None
        points = {}
        for d in days:
            day_parts = [parts[h] for h in hours[d]]
            source = combine_sources(p.source for p in day_parts)
            value = (
                None
                if source == UNAVAILABLE
                else combine_values(metric.aggregate, (p.value for p in day_parts))
            )
            points[d] = Point(d, value, source)
        return points

    # --- lifetime values -------------------------------------------------------------------------
    def lifetime(self, name: str, key: Key = (), degraded: Degraded | None = None) -> LifetimeValue:
        """A lifetime metric's value for one key (speed; batch partials when speed has none)."""
        return self.lifetimes(name, [key], degraded)[tuple(key)]

    def lifetimes(
        self, name: str, keys: Sequence[Key], degraded: Degraded | None = None
    ) -> dict[tuple[str, ...], LifetimeValue]:
        metric = self.metric(name)
        degraded = degraded if degraded is not None else Degraded()
        keys = [tuple(k) for k in keys]
        for k in keys:
            if len(k) != len(metric.by):
                raise QueryError(f"metric {name} takes {len(metric.by)} key value(s), got {len(k)}")
        if not metric.is_lifetime:
            raise QueryError(f"metric {name} is not a lifetime metric: use series()")
        bases = self._base_aggregates(metric)
        values = self._lifetime_bases(bases, keys, degraded)
        if not metric.is_derived:
            return {k: values[(metric.name, k)] for k in keys}
        found = {}
        for k in keys:
            parts = {b.name: values[(b.name, k)] for b in bases}
            source = combine_sources(p.source for p in parts.values())
            value = None
            if source != UNAVAILABLE:
                value = evaluate_formula(metric.formula or "", {n: p.value for n, p in parts.items()})
            found[k] = LifetimeValue(value, source, any(p.approximate for p in parts.values()))
        return found

    def _lifetime_bases(
        self, bases: list[Metric], keys: list[tuple[str, ...]], degraded: Degraded
    ) -> dict[tuple[str, tuple[str, ...]], LifetimeValue]:
        found: dict[tuple[str, tuple[str, ...]], LifetimeValue] = {}
        speed_down = False
        for base in bases:
            if base.aggregate not in SCALAR:
                raise QueryError(f"metric {base.name} is a {base.aggregate}, not a value")
            try:
                for k, v in self.speed.lifetime(base, keys).items():
                    if v is not None:
                        found[(base.name, k)] = LifetimeValue(v, SPEED, base.aggregate == "count_distinct")
            except EngineUnavailable as exc:
                degraded.add(exc)
                speed_down = True
        missing = [(b, k) for b in bases for k in keys if (b.name, k) not in found]
        if not missing:
            return found
        batch_down = False
        partials: dict[tuple[str, tuple[str, ...]], list[tuple[int, Row]]] = {}
        try:
            boundary = self.batch.boundary()
            names = sorted({b.name for b, _ in missing})
            partials = self.batch.lifetime_partials(names, sorted({k for _, k in missing}), boundary)
        except EngineUnavailable as exc:
            degraded.add(exc)
            batch_down = True
        for base, k in missing:
            rows = partials.get((base.name, k), [])
            if rows:
                found[(base.name, k)] = LifetimeValue(_combine_partials(base, rows), BATCH)
            elif speed_down and batch_down:
                found[(base.name, k)] = LifetimeValue(None, UNAVAILABLE)
            else:
                found[(base.name, k)] = LifetimeValue(None, BATCH if speed_down else SPEED)
        return found

    # --- composite answers -----------------------------------------------------------------------
    # --- stagger windows (opened per key by its first event) --------------------------------------
    def stagger(self, name: str, key: Key, start: int, end: int) -> dict[str, Any]:
        """A key's stagger windows starting in [start, end), oldest first: a window whose start hour
        is within the batch boundary comes from batch, any other from speed (each window once)."""
        metric = self.metric(name)
        label = metric.stagger_label
        if label is None:
            raise QueryError(f"metric {name} has no stagger window: use /v1/metrics/{name}")
        key = tuple(key)
        if len(key) != len(metric.by):
            raise QueryError(f"metric {name} needs {len(metric.by)} key value(s) ({', '.join(metric.by)})")
        if start >= end:
            raise QueryError("start must be before end")
        degraded = Degraded()
        boundary = self.boundary(degraded) if metric.batch else NO_BATCH
        windows: list[dict[str, Any]] = []
        if boundary.first is not None and boundary.last is not None:
            low, high = max(start, boundary.first), min(end, boundary.last + HOUR_S)
            try:
                for first, value in self.batch.stagger_windows(name, label, key, low, high):
                    windows.append(_window(first, value, BATCH))
            except EngineUnavailable as exc:
                degraded.add(exc)
                boundary = NO_BATCH
        try:
            found = self.redis.run(lambda _r: self.speed.query.stagger(name, key, start, end))
            windows += [
                _window(f, v, SPEED, metric) for f, v in found if not boundary.covers(floor(f, HOUR_S))
            ]
        except EngineUnavailable as exc:
            degraded.add(exc)
        windows.sort(key=lambda w: w["start"])
        return {
            "metric": name,
            "window": label,
            "key": list(key),
            "start": iso(start),
            "end": iso(end),
            "watermark": None if boundary.watermark is None else iso(boundary.watermark),
            "windows": windows,
            "degraded": list(degraded),
        }

    def funnel(self, start: int, end: int) -> dict[str, Any]:
        """The catalogue's funnel counts over the hours overlapping [start, end), reconciled."""
        steps, sources, degraded = [], set(), Degraded()
        for step, name in FUNNEL_STEPS:
            series = self.series(name, start, end, "hour")
            for reason in series.degraded:
                degraded.add(reason)
            sources.update(p.source for p in series.points)
            known = [p.value for p in series.points if p.value is not None]
            unavailable = all(p.source == UNAVAILABLE for p in series.points)
            steps.append({"step": step, "count": None if unavailable else float(sum(known))})
        return {
            "start": iso(floor(start, HOUR_S)),
            "end": iso(ceil(end, HOUR_S)),
            "steps": steps,
            "sources": sorted(sources),
            "degraded": list(degraded),
        }


def _window(first: float, value: float | None, source: str, metric: Metric | None = None) -> dict[str, Any]:
    moment = datetime.fromtimestamp(first, UTC)
    return {
        "start": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z",
        "value": value,
        "source": source,
        "approximate": metric is not None and metric.aggregate == "count_distinct",
    }


def _combine_partials(metric: Metric, rows: list[tuple[int, Row]]) -> float | None:
    """A lifetime value from the batch layer's hourly partials (count_distinct cannot be combined)."""
    if metric.aggregate == "last":
        latest = max(rows, key=lambda r: r[0])
        return latest[1].value
    if metric.aggregate in COMBINE:
        return combine_values(metric.aggregate, (r.value for _, r in rows))
    return None
