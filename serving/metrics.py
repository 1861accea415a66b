"""Prometheus metrics of the serving process, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "lambdalake_serving"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_up = Gauge(
            f"{PREFIX}_engine_up", "1 if the engine answered the last health check.", ["engine"], registry=r
        )
        self.watermark = Gauge(
            f"{PREFIX}_batch_watermark_seconds",
            "Start of the last hour served from batch (epoch s); 0 while none.",
            registry=r,
        )
        self.drift_relative = Gauge(
            f"{PREFIX}_drift_relative",
            "|speed - batch| / |batch| of the latest published hour with both values.",
            ["metric"],
            registry=r,
        )
        self.drift_absolute = Gauge(
            f"{PREFIX}_drift_absolute",
            "|speed - batch| of the latest published hour with both values.",
            ["metric"],
            registry=r,
        )
        self.drift_over = Gauge(
            f"{PREFIX}_drift_hours_over_threshold",
            "Published hours in the drift lookback whose relative difference is over the threshold.",
            ["metric"],
            registry=r,
        )
        self.expired_keys = Counter(
            f"{PREFIX}_speed_keys_expired",
            "Speed view keys of published hours given their retention TTL.",
            registry=r,
        )
        self.maintenance_errors = Counter(
            f"{PREFIX}_maintenance_errors", "Failed periodic runs, by task.", ["task"], registry=r
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
