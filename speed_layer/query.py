"""Reading the speed layer's views by metric name: what the serving layer calls.

Every answer is computed from the keys ``keys.py`` names, the way the metric's aggregate combines:
counts and sums add over buckets, count_distinct merges HyperLogLogs (PFCOUNT of many keys),
min/max take the extreme, top_k adds the buckets' sorted sets (ZUNION) and ranks, derived metrics
evaluate their formula over their inputs combined over the same range.

Sliding spans (``sliding: [5m, 1h]`` in the catalogue) are answered by ``Metric.sliding_plan``,
ending with the bucket holding ``now``: "the last 5 minutes" is the current minute and the four
before it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, Metric, evaluate_formula, load_catalogue, parse_duration
from lambdalake.metrics.evaluate import MICROS, micros
from lambdalake.settings import Settings
from speed_layer.keys import LIFETIME, SpeedKeys, format_start

Key = Sequence[str]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SpeedQuery:
    def __init__(self, settings: Settings, redis: Any, catalogue: Catalogue | None = None) -> None:
        self.redis = redis
        self.catalogue = catalogue or load_catalogue(settings.metric_catalogues)
        self.keys = SpeedKeys(settings.speed_key_prefix)

    # --- planning -------------------------------------------------------------------------------
    def sliding_buckets(self, metric: Metric, span: str, now: float | None = None) -> tuple[str, list[int]]:
        """(window label, bucket starts) that answer a sliding span ending at ``now``."""
        size, count = metric.sliding_plan(span)
        label = next(w for w in metric.windows if w != LIFETIME and parse_duration(w) == size)
        current = int((time.time() if now is None else now) // size) * size
        return label, [current - i * size for i in range(count - 1, -1, -1)]

    def buckets(self, window: str, start: float, end: float) -> list[int]:
        """Bucket starts of ``window`` from the one holding ``start`` up to (excluding) ``end``."""
        size = parse_duration(window)
        first = int(start // size) * size
        return list(range(first, int(end), size))

    def _keys(self, metric: Metric, window: str | None, buckets: Sequence[int] | None, key: Key) -> list[str]:
        if metric.is_lifetime or window is None:
            return [self.keys.view(metric.name, LIFETIME, None, key)]
        if window not in metric.windows:
            raise ValueError(f"metric {metric.name} has no window {window} (it has {metric.windows})")
        return [self.keys.view(metric.name, window, b, key) for b in buckets or ()]

    # --- scalar values --------------------------------------------------------------------------
    def value(
        self, name: str, key: Key = (), window: str | None = None, buckets: Sequence[int] | None = None
    ) -> float | None:
        """The metric for ``key`` over the given buckets of ``window`` combined (lifetime: no window).

        None when there is no data (or a formula divides by zero)."""
        metric = self.catalogue[name]
        if metric.is_derived:
            inputs = {n: self.value(n, key, window, buckets) for n in metric.formula_inputs()}
            return evaluate_formula(metric.formula or "", inputs)
        if metric.is_stagger:
            raise ValueError(f"metric {name} has stagger windows: use stagger()")
        return self._combined(metric, self._keys(metric, window, buckets, key))

    def _combined(self, metric: Metric, keys: list[str]) -> float | None:
        """The value of an aggregated metric's keys combined (None when none holds data)."""
        name, aggregate = metric.name, metric.aggregate
        if aggregate == "count_distinct":
            return float(self.redis.pfcount(*keys)) if keys else None
        if aggregate == "last":
            pipe = self.redis.pipeline(transaction=False)
            for k in keys:
                pipe.hmget(k, ["t", "v"])
            found = [(float(t), float(v)) for t, v in pipe.execute() if t is not None]
            return max(found)[1] if found else None
        if aggregate in ("top_k", "last_n", "co_occurrence"):
            raise ValueError(f"metric {name} is a {aggregate}: use top(), recent() or related()")
        values = [float(v) for v in self.redis.mget(keys) if v is not None] if keys else []
        if not values:
            return None
        if aggregate == "min":
            return min(values)
        if aggregate == "max":
            return max(values)
        return sum(values)

    def stagger(self, name: str, key: Key, start: float, end: float) -> list[tuple[float, float]]:
        """(window start, value) of each stagger window of ``key`` starting in [start, end), oldest first.

        Start times are epoch seconds (to the microsecond: a window starts at its first event's time).
        A window whose value expired (its retention passed) is left out.
        """
        metric = self.catalogue[name]
        label = metric.stagger_label
        if label is None:
            raise ValueError(f"metric {name} has no stagger window (it has {metric.windows})")
        index = self.keys.stagger_starts(name, label, key)
        starts = [
            int(score)
            for _, score in self.redis.zrangebyscore(index, micros(start), f"({micros(end)}", withscores=True)
        ]
        keys = [self.keys.view(name, label, None, (format_start(first), *key)) for first in starts]
        if metric.aggregate in ("count", "sum", "min", "max"):  # one string per window: one MGET
            values = [None if v is None else float(v) for v in self.redis.mget(keys)] if keys else []
        else:
            values = [self._combined(metric, [k]) for k in keys]
        return [(first / MICROS, v) for first, v in zip(starts, values, strict=True) if v is not None]

    def sliding(self, name: str, span: str, key: Key = (), now: float | None = None) -> float | None:
        """The metric over the last ``span`` (e.g. active users in the last 5 minutes)."""
        window, buckets = self.sliding_buckets(self._windowed(name), span, now)
        return self.value(name, key, window, buckets)

    def series(
        self, name: str, window: str, start: float, end: float, key: Key = ()
    ) -> list[tuple[int, float | None]]:
        """One value per bucket of ``window`` in [start, end): a chart's points."""
        return [(b, self.value(name, key, window, [b])) for b in self.buckets(window, start, end)]

    def _windowed(self, name: str) -> Metric:
        metric = self.catalogue[name]
        if metric.is_derived:
            metric = self.catalogue[metric.formula_inputs()[0]]  # inputs share windows (catalogue rule)
        return metric

    # --- ranked and listed views ----------------------------------------------------------------
    def top(
        self,
        name: str,
        key: Key = (),
        span: str | None = None,
        window: str | None = None,
        buckets: Sequence[int] | None = None,
        k: int | None = None,
        now: float | None = None,
    ) -> list[tuple[str, float]]:
        """The top-k items of a top_k metric over a sliding span, or over buckets of a window."""
        metric = self.catalogue[name]
        if span is not None:
            window, buckets = self.sliding_buckets(metric, span, now)
        keys = self._keys(metric, window, buckets, key)
        k = k or metric.k
        if len(keys) == 1:
            rows = self.redis.zrevrange(keys[0], 0, k - 1, withscores=True)
        else:
            rows = self.redis.zunion(keys, withscores=True)
            rows = sorted(rows, key=lambda r: (-r[1], r[0]))[:k]
        return [(_text(item), float(score)) for item, score in rows]

    def recent(self, name: str, key: Key, n: int | None = None) -> list[str]:
        """A last_n list, newest first."""
        metric = self.catalogue[name]
        keys = self._keys(metric, None, None, key)
        return [_text(i) for i in self.redis.zrevrange(keys[0], 0, (n or metric.n) - 1)]

    def related(self, name: str, item: str, key: Key = (), k: int | None = None) -> list[tuple[str, float]]:
        """A co_occurrence metric's items most often seen in the same scope as ``item``."""
        metric = self.catalogue[name]
        base = self._keys(metric, None, None, key)[0]
        rows = self.redis.zrevrange(f"{base}:{item}", 0, (k or metric.k) - 1, withscores=True)
        return [(_text(i), float(s)) for i, s in rows]
