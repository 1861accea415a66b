"""The batch view: catalogue metrics as the warehouse holds them, and the batch watermark.

Rows of ``agg_metrics_hourly_v1`` / ``agg_metrics_daily_v1`` (see spark_jobs/compile_metrics.py):
one per metric, window, bucket, key (a JSON array of the ``by`` values, ``[]`` for none) and item.
Scalar aggregates have ``item`` null and ``value`` the number; top_k rows carry ``item`` and
``item_rank``; lifetime metrics have one partial per hour (window ``lifetime``).

The boundary comes from ``lambdalake_meta.published_hours`` (batch/watermark.py) and is read at
most every ``serving_watermark_cache_s``, so an hour counts as batch within about a second of
``Watermark.mark_published`` and stops counting as soon as ``mark_reprocessing`` is called.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

import orjson

from batch.watermark import TABLE as WATERMARK_TABLE
from batch.watermark import contiguous_end
from lambdalake.settings import Settings
from serving.engines import WarehouseEngine
from serving.times import HOUR_S, to_datetime, to_epoch

HOURLY_TABLE = "agg_metrics_hourly_v1"
DAILY_TABLE = "agg_metrics_daily_v1"
UNDEFINED_TABLE = "42P01"


@dataclass(frozen=True)
class Boundary:
    """Hours ``first`` ≤ h ≤ ``last`` are answered from batch (epoch s of hour starts); None: none."""

    first: int | None
    last: int | None

    def covers(self, hour: int) -> bool:
        return self.first is not None and self.last is not None and self.first <= hour <= self.last

    @property
    def watermark(self) -> int | None:
        return self.last


NO_BATCH = Boundary(None, None)


@dataclass(frozen=True)
class Row:
    item: str | None
    rank: int | None
    value: float | None


@dataclass(frozen=True)
class PublishedHour:
    hour: int
    published_at: float | None


def boundary_of(rows: Sequence[tuple[int, bool]]) -> Boundary:
    """The contiguous run of published hours from the first row (batch/watermark.py's rule)."""
    if not rows:
        return NO_BATCH
    ordered = sorted(rows)
    last = contiguous_end((to_datetime(h), r) for h, r in ordered)
    if last is None:
        return NO_BATCH
    return Boundary(ordered[0][0], to_epoch(last))


class BatchView:
    def __init__(self, settings: Settings, engine: WarehouseEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.meta_table = f"{settings.batch_meta_schema}.{WATERMARK_TABLE}"
        self._cache: tuple[float, Boundary] | None = None
        self._lock = threading.Lock()

    # --- the boundary ------------------------------------------------------------------------
    def boundary(self) -> Boundary:
        """Cached for ``serving_watermark_cache_s``; raises EngineUnavailable when the warehouse is down."""
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < self.settings.serving_watermark_cache_s:
            return cached[1]
        with self._lock:
            cached = self._cache
            if cached is not None and time.monotonic() - cached[0] < self.settings.serving_watermark_cache_s:
                return cached[1]
            rows = self._meta(f"SELECT hour_start, reprocessing FROM {self.meta_table} ORDER BY hour_start")
            found = boundary_of([(to_epoch(h), bool(r)) for h, r in rows])
            self._cache = (time.monotonic(), found)
            return found

    def forget(self) -> None:
        """Drop the cached boundary (tests, and after a known publish)."""
        self._cache = None

    def published(self, start: int, end: int) -> list[PublishedHour]:
        """Hours in [start, end) published and not being reprocessed, with when they were published."""
        rows = self._meta(
            f"SELECT hour_start, published_at FROM {self.meta_table}"
            " WHERE NOT reprocessing AND hour_start >= %s AND hour_start < %s ORDER BY hour_start",
            (to_datetime(start), to_datetime(end)),
        )
        return [PublishedHour(to_epoch(h), None if p is None else to_epoch(p)) for h, p in rows]

    def _meta(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        def read(cursor: object) -> list[tuple[object, ...]]:
            try:
                cursor.execute(sql, params)  # type: ignore[attr-defined]
            except self.engine.errors as exc:
                if getattr(exc, "sqlstate", None) == UNDEFINED_TABLE or "does not exist" in str(exc):
                    return []  # no batch has ever published here: no hour is batch (autocommit: no harm)
                raise
            return [tuple(r) for r in cursor.fetchall()]  # type: ignore[attr-defined]

        return self.engine.run(read)

    # --- metric rows ---------------------------------------------------------------------------
    def _key_test(self) -> str:
        if self.engine.dialect == "redshift":
            return "JSON_SERIALIZE(metric_key) = %s"
        return "metric_key = %s::jsonb"

    def rows(
        self,
        metrics: Sequence[str],
        window: str,
        key: Sequence[str],
        start: int,
        end: int,
        daily: bool = False,
    ) -> dict[tuple[str, int], list[Row]]:
        """Rows of the metrics' ``window`` for ``key``, bucket_start in [start, end), by (metric, bucket)."""
        if not metrics or start >= end:
            return {}
        table = DAILY_TABLE if daily else HOURLY_TABLE
        marks = ", ".join(["%s"] * len(metrics))
        sql = (
            f"SELECT metric, bucket_start, item, item_rank, value FROM {table}"
            f" WHERE metric IN ({marks}) AND metric_window = %s AND {self._key_test()}"
            " AND bucket_start >= %s AND bucket_start < %s"
        )
        params = (
            *metrics,
            window,
            orjson.dumps(list(key)).decode(),
            to_datetime(start).replace(tzinfo=None),
            to_datetime(end).replace(tzinfo=None),
        )

        def read(cursor: object) -> list[tuple[object, ...]]:
            cursor.execute(sql, params)  # type: ignore[attr-defined]
            return [tuple(r) for r in cursor.fetchall()]  # type: ignore[attr-defined]

        found: dict[tuple[str, int], list[Row]] = {}
        for metric, bucket, item, rank, value in self.engine.run(read):
            found.setdefault((str(metric), to_epoch(bucket)), []).append(  # type: ignore[arg-type]
                Row(
                    None if item is None else str(item),
                    None if rank is None else int(rank),  # type: ignore[call-overload]
                    None if value is None else float(value),  # type: ignore[arg-type]
                )
            )
        return found

    def stagger_windows(
        self, metric: str, label: str, key: Sequence[str], start: int, end: int
    ) -> list[tuple[float, float | None]]:
        """(exact start in epoch seconds, value) of a key's stagger windows starting in [start, end)."""
        if start >= end:
            return []
        sql = (
            f"SELECT bucket_start, value FROM {HOURLY_TABLE}"
            f" WHERE metric = %s AND metric_window = %s AND {self._key_test()}"
            " AND bucket_start >= %s AND bucket_start < %s ORDER BY bucket_start"
        )
        params = (
            metric,
            label,
            orjson.dumps(list(key)).decode(),
            to_datetime(start).replace(tzinfo=None),
            to_datetime(end).replace(tzinfo=None),
        )

        def read(cursor: object) -> list[tuple[object, ...]]:
            cursor.execute(sql, params)  # type: ignore[attr-defined]
            return [tuple(r) for r in cursor.fetchall()]  # type: ignore[attr-defined]

        out = []
        for bucket, value in self.engine.run(read):
            moment = bucket if bucket.tzinfo else bucket.replace(tzinfo=UTC)  # type: ignore[attr-defined]
            out.append((moment.timestamp(), None if value is None else float(value)))  # type: ignore[arg-type]
        return out

    def lifetime_partials(
        self, metrics: Sequence[str], keys: Sequence[Sequence[str]], boundary: Boundary
    ) -> dict[tuple[str, tuple[str, ...]], list[tuple[int, Row]]]:
        """Hourly partials of lifetime metrics for the given keys, over the hours batch serves."""
        if not metrics or not keys or boundary.first is None or boundary.last is None:
            return {}
        marks = ", ".join(["%s"] * len(metrics))
        key_marks = " OR ".join([f"({self._key_test()})"] * len(keys))
        serialize = "JSON_SERIALIZE(metric_key)" if self.engine.dialect == "redshift" else "metric_key::text"
        sql = (
            f"SELECT metric, {serialize}, bucket_start, item, item_rank, value FROM {HOURLY_TABLE}"
            f" WHERE metric IN ({marks}) AND metric_window = 'lifetime' AND ({key_marks})"
            " AND bucket_start >= %s AND bucket_start <= %s"
        )
        params = (
            *metrics,
            *[orjson.dumps(list(k)).decode() for k in keys],
            to_datetime(boundary.first).replace(tzinfo=None),
            to_datetime(boundary.last).replace(tzinfo=None),
        )

        def read(cursor: object) -> list[tuple[object, ...]]:
            cursor.execute(sql, params)  # type: ignore[attr-defined]
            return [tuple(r) for r in cursor.fetchall()]  # type: ignore[attr-defined]

        found: dict[tuple[str, tuple[str, ...]], list[tuple[int, Row]]] = {}
        for metric, key_text, bucket, item, rank, value in self.engine.run(read):
            key = tuple(str(k) for k in orjson.loads(str(key_text)))
            found.setdefault((str(metric), key), []).append(
                (
                    to_epoch(bucket),  # type: ignore[arg-type]
                    Row(
                        None if item is None else str(item),
                        None if rank is None else int(rank),  # type: ignore[call-overload]
                        None if value is None else float(value),  # type: ignore[arg-type]
                    ),
                )
            )
        return found


def hours_of(start: int, end: int) -> list[int]:
    """Hour starts of every hour overlapping [start, end)."""
    first = start // HOUR_S * HOUR_S
    return list(range(first, end, HOUR_S))
