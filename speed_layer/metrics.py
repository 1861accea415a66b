"""Prometheus metrics of the speed-layer processors, on the process's consumer registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class SpeedMetrics:
    """One per process, shared by every group's processors (labels say which group)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "lambdalake_speed_events",
            "Records by outcome: applied, skipped (an event type the group does nothing with), duplicates "
            "(client resends), replayed (already applied), invalid",
            ["group", "outcome"],
            registry=self.registry,
        )
        self.late_events = Counter(
            "lambdalake_speed_late_events",
            "Events too late for a window (ended before the shard's watermark): left to the batch layer",
            ["group", "window"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "lambdalake_speed_conflicts",
            "Batches rebuilt because another writer moved the shard's state (zombie or takeover)",
            ["group"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "lambdalake_speed_batch_seconds",
            "Time to apply one batch (parse, build, one Lua call)",
            ["group"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.alerts = Counter(
            "lambdalake_speed_alerts", "Alerts raised, by kind", ["kind"], registry=self.registry
        )
        self.webhook = Counter(
            "lambdalake_speed_webhook_posts",
            "Alert webhook POSTs, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.orders = Counter(
            "lambdalake_speed_enriched_orders", "Denormalised order records written", registry=self.registry
        )
