"""One speed-layer worker process: a consumer-runtime worker per group, metrics on /metrics."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from lambdalake.settings import Settings

log = logging.getLogger(__name__)

# group -> "module:class" of its RecordProcessor (constructed as cls(settings, redis, metrics)).
GROUPS: dict[str, str] = {
    "views": "speed_layer.views:ViewsProcessor",
    "alerts": "speed_layer.alerts:AlertsProcessor",
    "enrich": "speed_layer.enrich:EnrichProcessor",
}


def parse_groups(text: str) -> list[str]:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(
            f"unknown group(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(GROUPS)}"
        )
    return groups


class SpeedService:
    """The groups' workers in one process, sharing one Redis pool and one metrics registry."""

    def __init__(self, settings: Settings, groups: Sequence[str], metrics_port: int | None = None) -> None:
        import redis as redis_lib

        from lambdalake.consumer.config import ConsumerConfig
        from lambdalake.consumer.metrics import ConsumerMetrics
        from lambdalake.consumer.worker import ConsumerWorker
        from speed_layer.metrics import SpeedMetrics

        self.settings = settings
        self.redis = redis_lib.Redis.from_url(settings.redis_url)
        self.consumer_metrics = ConsumerMetrics()
        self.metrics = SpeedMetrics(self.consumer_metrics.registry)
        self.metrics_port = metrics_port
        self.workers: list[Any] = []
        self.extras: list[Any] = []  # background loops a group needs besides its worker
        for group in groups:
            module_name, class_name = GROUPS[group].split(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            shared = cls.shared_state(settings, self.redis, self.metrics)
            factory: Callable[[], Any] = lambda cls=cls, shared=shared: cls(  # noqa: E731
                settings, self.redis, self.metrics, shared=shared
            )
            config = ConsumerConfig.from_settings(settings, group)
            self.workers.append(
                ConsumerWorker(settings, config, factory, redis=self.redis, metrics=self.consumer_metrics)
            )
            self.extras += cls.background(settings, self.redis, self.metrics)
        self._server: Any = None

    def start(self) -> SpeedService:
        from lambdalake.consumer.metrics import start_metrics_server

        if self.metrics_port:
            self._server = start_metrics_server(self.metrics_port, self.consumer_metrics.registry)
        for worker in self.workers:
            worker.start()
        for extra in self.extras:
            extra.start()
        return self

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for extra in self.extras:
            extra.stop()

    def join(self, timeout: float | None = None) -> None:
        for worker in self.workers:
            worker.join(timeout)
        for extra in self.extras:
            extra.join(timeout)
        if self._server is not None:
            self._server.shutdown()

    def run_until(self, stopped: threading.Event) -> None:
        """Run until ``stopped`` is set (SIGTERM/SIGINT in the CLI), then stop cleanly."""
        self.start()
        try:
            stopped.wait()
        finally:
            self.stop()
            self.join(self.settings.consumer_shutdown_timeout_s + 5)
