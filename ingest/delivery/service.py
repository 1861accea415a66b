"""`lambdalake deliver`: the delivery and errors-archive consumer groups, and the hour closer, in
one process. Run several processes to share the shards; every one of them may close hours (a
Redis lock per hour keeps two from writing the same manifest version)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ingest.delivery.manifest import HourCloser, HourState
from ingest.delivery.processor import DeliveryProcessor, DeliveryStats, ErrorsArchiver, delivery_config
from lambdalake.consumer import ConsumerMetrics, ConsumerWorker
from lambdalake.consumer.leases import RedisLeaseStore
from lambdalake.settings import Settings
from lambdalake.stream import StreamBus, get_bus

log = logging.getLogger(__name__)


class DeliveryService:
    def __init__(
        self,
        settings: Settings,
        *,
        deliver: bool = True,
        archive_errors: bool = True,
        close_hours: bool = True,
        bus: StreamBus | None = None,
        redis: Any = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        import redis as redis_lib

        self.settings = settings
        self.bus = bus or get_bus(settings)
        self.redis = redis or redis_lib.Redis.from_url(settings.redis_url)
        self.state = HourState(self.redis, settings.delivery_key_prefix)
        self.closer = HourCloser(settings, self.state)
        config = delivery_config(settings, settings.delivery_group, settings.stream_name)
        self.leases = RedisLeaseStore(self.redis, config.group, config.key_prefix)
        self.stats = DeliveryStats()
        self.error_stats = DeliveryStats()
        self.close_hours = close_hours
        metrics = metrics or ConsumerMetrics()
        self.workers: list[ConsumerWorker] = []
        if deliver:
            factory: Callable[[], Any] = lambda: DeliveryProcessor(settings, self.state, self.stats)  # noqa: E731
            self.workers.append(
                ConsumerWorker(settings, config, factory, bus=self.bus, redis=self.redis, metrics=metrics)
            )
        if archive_errors:
            config = delivery_config(settings, settings.delivery_errors_group, settings.dlq_stream_name)
            # The archive's own failures must not loop back into the stream it reads.
            config = dataclasses.replace(config, max_retry_attempts=-1)
            self.workers.append(
                ConsumerWorker(
                    settings,
                    config,
                    lambda: ErrorsArchiver(settings, self.error_stats),
                    bus=self.bus,
                    redis=self.redis,
                    metrics=metrics,
                )
            )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def close_ready(self) -> list[dict[str, Any]]:
        """One closer step: manifests for every hour the watermark has closed."""
        shards = [s.shard_id for s in self.bus.list_shards(self.settings.stream_name) if s.is_open]
        leases, now_ms = self.leases.list_leases()
        held = [lease.shard_id for lease in leases if not lease.is_expired(now_ms)]
        return self.closer.close_ready(datetime.now(UTC), shards, held)

    def _close_loop(self) -> None:
        while not self._stop.wait(self.settings.delivery_close_interval_s):
            try:
                for manifest in self.close_ready():
                    log.info(
                        "closed hour %s (version %d, %d rows)",
                        manifest["hour"],
                        manifest["version"],
                        manifest["rows"],
                    )
            except Exception:  # a failed step is retried at the next interval
                log.exception("closing hours failed; retrying")

    def start(self) -> DeliveryService:
        for worker in self.workers:
            worker.start()
        if self.close_hours:
            thread = threading.Thread(target=self._close_loop, name="delivery:closer", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def run(self) -> None:
        """Start, then block until ``stop()`` (a signal handler's), and stop cleanly."""
        self.start()
        while not self._stop.wait(1.0):
            pass
        self.join(self.settings.consumer_shutdown_timeout_s)

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop()

    def join(self, timeout: float | None = None) -> None:
        for worker in self.workers:
            worker.join(timeout)
        for thread in self._threads:
            thread.join(timeout)
