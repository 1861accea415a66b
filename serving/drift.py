"""The drift report: for every published hour, the speed and batch values of each metric, compared.

Speed and batch read the same catalogue entry, so they may differ only by lateness (events later
than ``allowed_lateness_s`` reach only batch), by duplicates older than the speed layer's dedupe
horizon, and by approximation (HyperLogLog, ~0.8% standard error). A relative difference over
``serving_drift_threshold`` is worth a look: it is logged as a warning (once per metric and hour),
shown by ``GET /v1/drift`` and exported as ``lambdalake_serving_drift_relative{metric=...}``.

By default the report covers the scalar metrics with an hourly window and no ``by`` keys (and
formulas of them). Rules per row: ``abs_diff = |speed - batch|``, ``rel_diff = abs_diff / |batch|``;
batch with no row for the hour counts as 0 (batch saw nothing); speed with no value (its keys
expired after publication, see retention.py) cannot be compared: both diffs are null.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lambdalake.metrics.catalogue import Catalogue, Metric, evaluate_formula
from serving.engines import EngineUnavailable
from serving.reconcile import Degraded, QueryError, Reconciler
from serving.speed_view import SCALAR
from serving.times import HOUR_S, iso

log = logging.getLogger(__name__)
MAX_WARNED = 10_000


@dataclass(frozen=True)
class DriftRow:
    metric: str
    hour: int
    batch: float | None
    speed: float | None
    abs_diff: float | None
    rel_diff: float | None
    over_threshold: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "hour": iso(self.hour),
            "batch": self.batch,
            "speed": self.speed,
            "abs_diff": self.abs_diff,
            "rel_diff": self.rel_diff,
            "over_threshold": self.over_threshold,
        }


def compare(
    batch: float | None, speed: float | None, threshold: float
) -> tuple[float | None, float | None, bool]:
    """(abs_diff, rel_diff, over_threshold) by the module's rules."""
    if speed is None:
        return None, None, False
    base = 0.0 if batch is None else batch
    absolute = abs(speed - base)
    if base == 0:
        relative = 0.0 if absolute == 0 else None
        return absolute, relative, absolute > 0
    relative = absolute / abs(base)
    return absolute, relative, relative > threshold


def drift_metrics(catalogue: Catalogue) -> list[Metric]:
    """Scalar batch metrics with an hourly window and no keys, and formulas over such metrics."""

    def eligible(metric: Metric) -> bool:
        return (
            not metric.is_derived
            and metric.batch
            and metric.aggregate in SCALAR
            and "1h" in metric.windows
            and not metric.by
        )

    chosen = []
    for metric in catalogue:
        if metric.is_derived:
            if not metric.by and all(eligible(catalogue[n]) for n in metric.formula_inputs()):
                chosen.append(metric)
        elif eligible(metric):
            chosen.append(metric)
    return chosen


class DriftReport:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.threshold = reconciler.settings.serving_drift_threshold
        self._warned: set[tuple[str, int]] = set()

    def metrics(self, names: Sequence[str] | None = None) -> list[Metric]:
        default = drift_metrics(self.reconciler.catalogue)
        if not names:
            return default
        chosen = []
        for name in names:
            metric = self.reconciler.metric(name)
            bases = (
                [metric]
                if not metric.is_derived
                else [self.reconciler.catalogue[n] for n in metric.formula_inputs()]
            )
            if metric.by or any(b.aggregate not in SCALAR or "1h" not in b.windows for b in bases):
                raise QueryError(f"metric {name} has no hourly scalar value to compare (drift needs one)")
            chosen.append(metric)
        return chosen

    def rows(
        self, start: int, end: int, names: Sequence[str] | None = None, degraded: Degraded | None = None
    ) -> list[DriftRow]:
        """One row per published hour in [start, end) and metric; empty if an engine is down."""
        degraded = degraded if degraded is not None else Degraded()
        metrics = self.metrics(names)
        r = self.reconciler
        try:
            hours = [p.hour for p in r.batch.published(start, end)]
        except EngineUnavailable as exc:
            degraded.add(exc)
            return []
        if not hours:
            return []
        bases: dict[str, Metric] = {}
        for metric in metrics:
            for name in metric.formula_inputs() if metric.is_derived else [metric.name]:
                bases[name] = r.catalogue[name]
        try:
            rows = r.batch.rows(sorted(bases), "1h", (), hours[0], hours[-1] + HOUR_S)
        except EngineUnavailable as exc:
            degraded.add(exc)
            return []
        batch = {(n, h): (rows[(n, h)][0].value if (n, h) in rows else None) for n in bases for h in hours}
        speed: dict[tuple[str, int], float | None] = {}
        try:
            for name, base in bases.items():
                for hour, value in r.speed.scalars(base, "1h", hours).items():
                    speed[(name, hour)] = value
        except EngineUnavailable as exc:
            degraded.add(exc)
            speed = {}
        report = []
        for metric in metrics:
            for hour in hours:
                if metric.is_derived:
                    inputs = metric.formula_inputs()
                    b = evaluate_formula(metric.formula or "", {n: batch[(n, hour)] for n in inputs})
                    s = evaluate_formula(metric.formula or "", {n: speed.get((n, hour)) for n in inputs})
                else:
                    b, s = batch[(metric.name, hour)], speed.get((metric.name, hour))
                absolute, relative, over = compare(b, s, self.threshold)
                report.append(DriftRow(metric.name, hour, b, s, absolute, relative, over))
        self._warn(report)
        return report

    def _warn(self, rows: list[DriftRow]) -> None:
        for row in rows:
            if row.over_threshold and (row.metric, row.hour) not in self._warned:
                if len(self._warned) >= MAX_WARNED:
                    self._warned.clear()
                self._warned.add((row.metric, row.hour))
                log.warning(
                    "drift over %.3g: %s at %s: speed %s, batch %s (relative %s)",
                    self.threshold,
                    row.metric,
                    iso(row.hour),
                    row.speed,
                    row.batch,
                    "n/a" if row.rel_diff is None else f"{row.rel_diff:.4f}",
                )


def latest_by_metric(rows: Sequence[DriftRow]) -> dict[str, DriftRow]:
    """Per metric, the latest hour with a comparison (what the Prometheus gauges show)."""
    latest: dict[str, DriftRow] = {}
    for row in rows:
        if row.abs_diff is None:
            continue
        if row.metric not in latest or row.hour > latest[row.metric].hour:
            latest[row.metric] = row
    return latest
