"""Prometheus metrics of the consumer runtime, per group and shard.

One ``ConsumerMetrics`` per process, shared by every group's worker in it, on a registry that the
process serves on ``/metrics`` (``start_metrics_server``). Processors may register their own
metrics (views' ``late_events``) on the same ``registry``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RATE_WINDOW_S = 10.0


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["group", "shard"]
        self.records = Counter(
            "lambdalake_consumer_records", "Records processed (checkpointed)", labels, registry=self.registry
        )
        self.records_per_second = Gauge(
            "lambdalake_consumer_records_per_second",
            f"Records processed per second over the last {RATE_WINDOW_S:g} s",
            labels,
            registry=self.registry,
        )
        self.millis_behind_latest = Gauge(
            "lambdalake_consumer_millis_behind_latest",
            "How far the last read was behind the tip of the shard",
            labels,
            registry=self.registry,
        )
        self.retries = Counter(
            "lambdalake_consumer_retries",
            "Batch deliveries retried after an error",
            labels,
            registry=self.registry,
        )
        self.dlq_records = Counter(
            "lambdalake_consumer_dlq_records",
            "Records sent to the on-failure destination (reason: retries_exhausted, record_age_exceeded)",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "lambdalake_consumer_batch_seconds",
            "Time to deliver one batch to the processor, retries included",
            ["group"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.leases_owned = Gauge(
            "lambdalake_consumer_leases_owned",
            "Shard leases this worker holds",
            ["group"],
            registry=self.registry,
        )
        self.lease_events = Counter(
            "lambdalake_consumer_lease_events",
            "Lease changes seen by this worker (taken, stolen, lost, released, finished)",
            ["group", "event"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def processed(self, group: str, shard: str, count: int, now: float | None = None) -> None:
        """Count checkpointed records and refresh the shard's records/s gauge."""
        now = time.monotonic() if now is None else now
        self.records.labels(group, shard).inc(count)
        with self._lock:
            recent = self._recent.setdefault((group, shard), deque())
            recent.append((now, count))
            while recent and recent[0][0] < now - RATE_WINDOW_S:
                recent.popleft()
            total = sum(n for _, n in recent)
        self.records_per_second.labels(group, shard).set(total / RATE_WINDOW_S)

    def idle(self, group: str, shard: str) -> None:
        self.processed(group, shard, 0)


def start_metrics_server(port: int, registry: CollectorRegistry, addr: str = "127.0.0.1") -> Any:
    """Serve ``registry`` on http://127.0.0.1:<port>/metrics from a daemon thread; returns the server
    (call ``shutdown()`` on it to stop)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
