"""The speed view read many buckets at a time: one Redis round trip per metric and range.

``speed_layer.query.SpeedQuery`` answers one value per call (what sliding spans, trending and
user lists use here too); a chart of 1,440 minutes would be 1,440 round trips that way, so
series are read with one MGET or one pipeline over the same keys (``speed_layer.keys``), combined
the way SpeedQuery combines them. One difference, on purpose: a HyperLogLog that does not exist
reads as no data (None), not 0, like a missing counter and like the batch view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, Metric
from lambdalake.settings import Settings
from serving.engines import RedisEngine
from speed_layer.keys import LIFETIME, SpeedKeys
from speed_layer.query import SpeedQuery

SCALAR = ("count", "sum", "count_distinct", "min", "max", "last")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SpeedView:
    def __init__(self, settings: Settings, engine: RedisEngine, catalogue: Catalogue) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.keys = SpeedKeys(settings.speed_key_prefix)
        self.query = SpeedQuery(settings, engine.client, catalogue)

    def _key(self, metric: Metric, window: str, bucket: int | None, key: Sequence[str]) -> str:
        return self.keys.view(metric.name, window, None if window == LIFETIME else bucket, key)

    def scalars(
        self, metric: Metric, window: str, buckets: Sequence[int], key: Sequence[str] = ()
    ) -> dict[int, float | None]:
        """One value per bucket of a scalar (count/sum/count_distinct/min/max/last) metric."""
        if not buckets:
            return {}
        names = [self._key(metric, window, b, key) for b in buckets]
        aggregate = metric.aggregate
        if aggregate in ("count", "sum", "min", "max"):
            raw = self.engine.run(lambda r: r.mget(names))
            values = [None if v is None else float(v) for v in raw]
        elif aggregate == "count_distinct":

            def counts(r: Any) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                for name in names:
                    pipe.pfcount(name)
                return pipe.execute()

            values = [float(c) if c else None for c in self.engine.run(counts)]
        elif aggregate == "last":

            def lasts(r: Any) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                for name in names:
                    pipe.hmget(name, ["t", "v"])
                return pipe.execute()

            values = [None if v is None else float(v) for _t, v in self.engine.run(lasts)]
        else:
            raise ValueError(f"metric {metric.name} is a {aggregate}, not a scalar")
        return dict(zip(buckets, values, strict=True))

    def tops(
        self,
        metric: Metric,
        window: str,
        buckets: Sequence[int],
        key: Sequence[str] = (),
        k: int | None = None,
    ) -> dict[int, list[tuple[str, float]]]:
        """The ranked items of a top_k metric in each bucket."""
        names = [self._key(metric, window, b, key) for b in buckets]
        limit = (k or metric.k) - 1

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.zrevrange(name, 0, limit, withscores=True)
            return pipe.execute()

        rows = self.engine.run(read) if names else []
        return {b: [(_text(i), float(s)) for i, s in found] for b, found in zip(buckets, rows, strict=True)}

    def lifetime(self, metric: Metric, keys: Sequence[Sequence[str]]) -> dict[tuple[str, ...], float | None]:
        """A lifetime scalar metric for many keys at once."""
        if not keys:
            return {}
        names = [self._key(metric, LIFETIME, None, k) for k in keys]
        aggregate = metric.aggregate

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for name in names:
                if aggregate == "count_distinct":
                    pipe.pfcount(name)
                elif aggregate == "last":
                    pipe.hget(name, "v")
                else:
                    pipe.get(name)
            return pipe.execute()

        raw = self.engine.run(read)
        # a missing key reads None, a missing HyperLogLog 0: both are no data
        return {tuple(k): (float(v) if v else None) for k, v in zip(keys, raw, strict=True)}
