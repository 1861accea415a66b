"""The consumer runtime: one worker process of a consumer group, reading the shards it leases.

A ``ConsumerWorker`` runs a coordinator loop and one ``ShardConsumer`` per leased shard:

- every ``shard_sync_s`` (and as soon as a shard ends) it lists the stream's shards and creates
  the missing leases (children of tracked shards start at TRIM_HORIZON);
- every ``lease_duration_s / 3`` it renews its leases, then takes free, expired or stolen ones
  towards an even split (``leases.plan_takes``); a child shard is taken only once its parents'
  checkpoints are ``SHARD_END``;
- each ``ShardConsumer`` prefetches reads on a reader thread while the processor works on the
  previous batch, delivers batches through ``delivery.BatchDelivery`` (retries, bisect, DLQ) and
  checkpoints after ``process_records`` returned, conditionally on still holding the lease. A
  pipelined processor (processor.py) gets the next batch submitted while the previous ones are
  still being applied, as long as the next one has been read already
  (``delivery.PipelinedDelivery``); each batch is checkpointed once durable, in order.

A shard consumer stops writing as soon as its lease may be gone: a renewal was refused (taken
over), or its last successful renewal is older than 90% of the lease duration on the worker's
monotonic clock, which is before the store lets another worker take an expired lease.

``stop()`` (wired to SIGTERM/SIGINT by ``install_signal_handlers``) lets each shard finish the
batch being delivered (or abandons it, uncheckpointed, if it is waiting to retry), calls
``shutdown("REQUESTED")`` and releases the lease, so another worker takes over at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lambdalake.consumer.checkpoints import SHARD_END, initial_checkpoint, is_sequence, start_position
from lambdalake.consumer.config import ConsumerConfig
from lambdalake.consumer.delivery import (
    Abandoned,
    BatchDelivery,
    Delivered,
    DeliveryPolicy,
    Failure,
    PipelinedDelivery,
)
from lambdalake.consumer.dlq import dead_letter_records
from lambdalake.consumer.leases import Lease, LeaseStore, NewLease, RedisLeaseStore, plan_takes
from lambdalake.consumer.metrics import ConsumerMetrics
from lambdalake.consumer.processor import BatchContext, RecordProcessor, ShutdownReason, is_pipelined
from lambdalake.settings import Settings
from lambdalake.stream.bus import Position, ReadBatch, ShardInfo, StreamBus, StreamRecord
from lambdalake.stream.kinesis import backoff_delay

log = logging.getLogger(__name__)

ProcessorFactory = Callable[[], RecordProcessor]

LEASE_SAFETY = 0.9  # fraction of the lease duration a worker trusts a renewal for
PREFETCH_BATCHES = 2
_END = object()  # reader -> consumer: the shard is closed and read to its end


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""


@dataclass(slots=True)
class _Shared:
    """What the coordinator and its shard consumers share (read-mostly)."""

    config: ConsumerConfig
    worker_id: str
    bus: StreamBus
    store: LeaseStore
    metrics: ConsumerMetrics
    shard_infos: dict[str, ShardInfo]
    on_shard_end: Callable[[], None]


class ShardConsumer:
    """Reads one leased shard and feeds its processor, from the lease's checkpoint on."""

    def __init__(self, shared: _Shared, lease: Lease, processor: RecordProcessor) -> None:
        self.shared = shared
        self.config = shared.config
        self.lease = lease
        self.shard_id = lease.shard_id
        self.processor = processor
        self.valid_until = time.monotonic() + self.config.lease_duration_s * LEASE_SAFETY
        self.lost = threading.Event()
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.reason: ShutdownReason | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_BATCHES)
        self._thread = threading.Thread(
            target=self._run, name=f"{self.config.group}:{self.shard_id}", daemon=True
        )
        self._reader = threading.Thread(
            target=self._read_loop, name=f"{self.config.group}:{self.shard_id}:reader", daemon=True
        )
        self._pending: list[StreamRecord] = []
        self._millis_behind = 0
        self._start: Position | None = None
        self._read_to_end = False

    # --- control, from the coordinator ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def renewed(self, started_at: float) -> None:
        self.valid_until = started_at + self.config.lease_duration_s * LEASE_SAFETY

    def mark_lost(self) -> None:
        self.lost.set()

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def may_write(self) -> bool:
        return not self.lost.is_set() and time.monotonic() < self.valid_until

    # --- reading ------------------------------------------------------------------------------
    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopping or the lease is gone; False means give up."""
        if self.stopping.wait(seconds):
            return False
        return self.may_write

    def _put(self, item: Any) -> bool:
        while not self.stopping.is_set() and not self.lost.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _closed_and_drained(self, last_sequence: str | None) -> bool:
        # moto returns a NextShardIterator forever on a closed shard; Kinesis and kinesalite return
        # none. So an empty read at or past the shard's ending sequence number also ends it.
        info = self.shared.shard_infos.get(self.shard_id)
        if info is None or info.ending_sequence_number is None:
            return False
        return int(last_sequence or "0") >= int(info.ending_sequence_number)

    def _read_loop(self) -> None:
        config, bus = self.config, self.shared.bus
        last = self.lease.checkpoint if is_sequence(self.lease.checkpoint) else None
        position = self._start or start_position(self.lease.checkpoint, config)
        errors = 0
        iterator: str | None = None
        while not self.stopping.is_set() and not self.lost.is_set():
            try:
                if iterator is None:
                    iterator = bus.shard_iterator(
                        config.stream, self.shard_id, Position.after(last) if last else position
                    )
                batch: ReadBatch = bus.read(self.shard_id, iterator, limit=config.batch_size)
            except Exception as exc:  # noqa: BLE001 - stream errors: back off, re-open the iterator
                code = _error_code(exc)
                if code != "ExpiredIteratorException":
                    log.warning("%s %s: read failed (%s): %s", config.group, self.shard_id, code, exc)
                    self.stopping.wait(
                        backoff_delay(errors, config.retry_backoff_s, config.retry_backoff_cap_s)
                    )
                    errors += 1
                iterator = None
                continue
            errors = 0
            self._millis_behind = batch.millis_behind_latest
            if batch.records:
                last = batch.records[-1].sequence_number
                if not self._put(batch):
                    return
            if batch.next_iterator is None or (not batch.records and self._closed_and_drained(last)):
                self._put(_END)
                return
            iterator = batch.next_iterator
            if not batch.records:
                self.shared.metrics.millis_behind_latest.labels(config.group, self.shard_id).set(
                    batch.millis_behind_latest
                )
                self.shared.metrics.idle(config.group, self.shard_id)
                self.stopping.wait(config.idle_poll_s)

    def _next_batch(self, return_when_idle: bool = False) -> tuple[list[StreamRecord], bool]:
        """Up to batch_size records (waiting up to the batching window for more), and whether the
        shard ended after them; with ``return_when_idle``, none if nothing came within a poll."""
        config = self.config
        deadline = None
        while len(self._pending) < config.batch_size and not self._read_to_end:
            if self.stopping.is_set() or self.lost.is_set():
                break
            if deadline is None and self._pending:
                deadline = time.monotonic() + config.max_batching_window_s
            try:
                if deadline is None:
                    item = self._queue.get(timeout=0.1)
                else:
                    remaining = deadline - time.monotonic()
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if deadline is None and return_when_idle:
                    break
                continue
            if item is _END:
                self._read_to_end = True
            else:
                self._pending.extend(item.records)
        batch, self._pending = self._pending[: config.batch_size], self._pending[config.batch_size :]
        return batch, self._read_to_end and not self._pending

    # --- processing ---------------------------------------------------------------------------
    def _dead_letter(self, failure: Failure) -> None:
        shared = self.shared
        records = dead_letter_records(
            failure, self.config.group, self.config.stream, self.shard_id, datetime.now(UTC)
        )
        shared.bus.put_records(self.config.on_failure_stream, records)
        shared.metrics.dlq_records.labels(self.config.group, self.shard_id, failure.reason).inc(len(records))
        log.warning(
            "%s %s: %d record(s) %s..%s to %s (%s): %s",
            self.config.group,
            self.shard_id,
            len(records),
            failure.records[0].sequence_number,
            failure.records[-1].sequence_number,
            self.config.on_failure_stream,
            failure.reason,
            failure.error,
        )

    def _context(self, attempt: int) -> BatchContext:
        if not self.may_write:
            raise Abandoned("lease lost")
        return BatchContext(
            group=self.config.group,
            stream=self.config.stream,
            shard_id=self.shard_id,
            worker_id=self.shared.worker_id,
            lease_counter=self.lease.counter,
            millis_behind_latest=self._millis_behind,
            attempt=attempt,
        )

    def _process(self, records: list[StreamRecord], attempt: int) -> None:
        self.processor.process_records(records, self._context(attempt))

    def _submit(self, records: list[StreamRecord]) -> int:
        return self.processor.submit_records(records, self._context(1))  # type: ignore[attr-defined,no-any-return]

    def _next_ready(self) -> bool:
        """Whether the next batch has been read already (then a pipelined batch need not finish)."""
        return bool(self._pending) or not self._queue.empty()

    def _commit(self, done: Delivered) -> bool:
        """Checkpoint a durable batch; False if the lease was lost first."""
        metrics, group = self.shared.metrics, self.config.group
        if done.outcome.retries:
            metrics.retries.labels(group, self.shard_id).inc(done.outcome.retries)
        if not self._checkpoint(done.records[-1].sequence_number):
            log.warning("%s %s: lease lost before checkpoint; stopping", group, self.shard_id)
            return False
        metrics.processed(group, self.shard_id, done.outcome.processed)
        metrics.millis_behind_latest.labels(group, self.shard_id).set(self._millis_behind)
        return True

    def _checkpoint(self, value: str) -> bool:
        if not self.may_write:
            return False
        return self.shared.store.checkpoint(self.shard_id, self.shared.worker_id, self.lease.counter, value)

    def _run(self) -> None:
        config, metrics, group = self.config, self.shared.metrics, self.config.group
        reason: ShutdownReason = "ZOMBIE"
        try:
            position = start_position(self.lease.checkpoint, config)
            if position is None:
                self.reason = "TERMINATE"
                return
            self._start = position
            self.processor.initialize(self.shard_id, position)
            self._reader.start()
            delivery = BatchDelivery(
                DeliveryPolicy.of(config), self._process, self._dead_letter, self._wait, time.time
            )
            pipeline = (
                PipelinedDelivery(
                    delivery,
                    self._submit,
                    self.processor.flush,  # type: ignore[attr-defined]
                    self.processor.finish,  # type: ignore[attr-defined]
                )
                if is_pipelined(self.processor)
                else None
            )
            while True:
                if not self.may_write:
                    return
                if self.stopping.is_set():
                    reason = "REQUESTED"
                    if pipeline is not None and self.may_write:
                        with contextlib.suppress(Abandoned):
                            for done in pipeline.drain():  # the batches in flight, then stop
                                if not self._commit(done):
                                    return
                    return
                in_flight = pipeline is not None and bool(pipeline.pending)
                records, ended = self._next_batch(return_when_idle=in_flight)
                if self.stopping.is_set() or not self.may_write:
                    continue  # a prefetched batch is not started once stopping
                if records or in_flight:
                    started = time.monotonic()
                    try:
                        if pipeline is None:
                            finished = [Delivered(records, delivery.deliver(records))]
                        else:
                            finished = pipeline.deliver(records) if records else []
                            if ended or not records:  # the shard ended or stayed idle for a poll
                                finished += pipeline.drain()
                            elif not self._next_ready():  # the next batch may take a while
                                finished += pipeline.flush()
                    except Abandoned:
                        reason = "REQUESTED" if self.may_write else "ZOMBIE"
                        return
                    if records:
                        metrics.batch_seconds.labels(group).observe(time.monotonic() - started)
                    for done in finished:
                        if not self._commit(done):
                            return
                if ended:
                    self.processor.shutdown("TERMINATE")
                    self.reason = "TERMINATE"
                    if self._checkpoint(SHARD_END):
                        metrics.lease_events.labels(group, "finished").inc()
                        self.shared.on_shard_end()
                    return
        except Exception:
            log.exception("%s %s: shard consumer failed", group, self.shard_id)
        finally:
            self.stopping.set()
            if self.reason is None:
                self.reason = reason
                with contextlib.suppress(Exception):
                    self.processor.shutdown(reason)
            if self.reason != "TERMINATE":
                with contextlib.suppress(Exception):
                    if self.shared.store.release(self.shard_id, self.shared.worker_id, self.lease.counter):
                        metrics.lease_events.labels(group, "released").inc()
            self.finished.set()


class ConsumerWorker:
    """One worker of a consumer group. Run several (processes or hosts) to share the shards."""

    def __init__(
        self,
        settings: Settings,
        config: ConsumerConfig,
        processor_factory: ProcessorFactory,
        *,
        bus: StreamBus | None = None,
        redis: Any = None,
        store: LeaseStore | None = None,
        metrics: ConsumerMetrics | None = None,
        worker_id: str | None = None,
    ) -> None:
        if bus is None:
            from lambdalake.stream import get_bus

            bus = get_bus(settings)
        if store is None:
            if redis is None:
                import redis as redis_lib

                # Bounded calls: a hung store must not hang the coordinator (leases just lapse).
                timeout = max(1.0, config.lease_duration_s)
                redis = redis_lib.Redis.from_url(
                    settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
                )
            store = RedisLeaseStore(redis, config.group, config.key_prefix)
        self.config = config
        self.factory = processor_factory
        self.worker_id = worker_id or new_worker_id()
        self.metrics = metrics or ConsumerMetrics()
        self.store = store
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sync_now = threading.Event()
        self._thread: threading.Thread | None = None
        self.consumers: dict[str, ShardConsumer] = {}
        self.shared = _Shared(config, self.worker_id, bus, store, self.metrics, {}, self._shard_ended)

    # --- public -------------------------------------------------------------------------------
    def run(self) -> None:
        """Coordinate until ``stop()``; then stop every shard cleanly and release the leases."""
        config = self.config
        next_sync = next_balance = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    if now >= next_sync or self._sync_now.is_set():
                        if self._sync_now.is_set():
                            next_balance = 0.0  # a shard ended: its children may be ready now
                        self._sync_now.clear()
                        self.sync_shards()
                        next_sync = now + config.shard_sync_s
                    if now >= next_balance:
                        self.renew()
                        self.balance()
                        next_balance = now + config.renew_interval_s
                except Exception:
                    log.exception("%s: coordinator step failed; retrying", config.group)
                    next_balance = now + config.renew_interval_s
                self._reap()
                self._wake.wait(max(0.0, min(next_sync, next_balance) - time.monotonic()))
                self._wake.clear()
        finally:
            self._shutdown_consumers()

    def start(self) -> ConsumerWorker:
        """Run in a background thread (for tests and for several groups in one process)."""
        self._thread = threading.Thread(target=self.run, name=f"consumer:{self.config.group}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def owned_shards(self) -> list[str]:
        return sorted(s for s, c in self.consumers.items() if not c.finished.is_set())

    # --- coordinator steps ----------------------------------------------------------------------
    def sync_shards(self) -> None:
        """Create leases for new shards; drop finished leases of shards the stream no longer has."""
        shards = self.shared.bus.list_shards(self.config.stream)
        self.shared.shard_infos.update({s.shard_id: s for s in shards})
        known = {s.shard_id for s in shards}
        new = [
            NewLease(
                s.shard_id,
                tuple(p for p in (s.parent_shard_id, s.adjacent_parent_shard_id) if p and p in known),
                initial_checkpoint(s, known, self.config),
            )
            for s in shards
        ]
        created = self.store.create_missing(new)
        if created:
            log.info("%s: created %d lease(s)", self.config.group, created)
        leases, _now = self.store.list_leases()
        gone = [lease.shard_id for lease in leases if lease.shard_id not in known and lease.is_finished]
        self.store.delete(gone)

    def renew(self) -> None:
        held = {s: c.lease.counter for s, c in self.consumers.items() if not c.finished.is_set()}
        if not held:
            return
        started = time.monotonic()
        results = self.store.renew(self.worker_id, held, int(self.config.lease_duration_s * 1000))
        for shard_id, ok in results.items():
            consumer = self.consumers[shard_id]
            if ok:
                consumer.renewed(started)
            elif not consumer.finished.is_set():
                log.info("%s %s: lease taken over", self.config.group, shard_id)
                self.metrics.lease_events.labels(self.config.group, "lost").inc()
                consumer.mark_lost()

    def balance(self) -> None:
        leases, now_ms = self.store.list_leases()
        for lease in leases:
            consumer = self.consumers.get(lease.shard_id)
            if (
                consumer
                and not consumer.finished.is_set()
                and (lease.owner != self.worker_id or lease.counter != consumer.lease.counter)
            ):
                consumer.mark_lost()
        for take in plan_takes(leases, self.worker_id, now_ms):
            previous = self.consumers.get(take.lease.shard_id)
            if previous is not None and not previous.finished.is_set():
                # Our own lease expired under a live consumer (renewals failed): let that consumer
                # stop first, then take the shard again on a later round, never two readers at once.
                previous.mark_lost()
                continue
            duration_ms = int(self.config.lease_duration_s * 1000)
            started = time.monotonic()
            lease = self.store.take(take.lease.shard_id, self.worker_id, take.lease, take.mode, duration_ms)
            if lease is None:
                continue
            self.metrics.lease_events.labels(
                self.config.group, "stolen" if take.mode == "steal" else "taken"
            ).inc()
            log.info(
                "%s: took %s (%s, counter %d)", self.config.group, lease.shard_id, take.mode, lease.counter
            )
            consumer = ShardConsumer(self.shared, lease, self.factory())
            consumer.renewed(started)
            self.consumers[lease.shard_id] = consumer
            consumer.start()
        self.metrics.leases_owned.labels(self.config.group).set(len(self.owned_shards()))

    # --- internals ----------------------------------------------------------------------------
    def _shard_ended(self) -> None:
        self._sync_now.set()
        self._wake.set()

    def _reap(self) -> None:
        for shard_id, consumer in list(self.consumers.items()):
            if consumer.finished.is_set():
                del self.consumers[shard_id]

    def _shutdown_consumers(self) -> None:
        consumers = list(self.consumers.values())
        for consumer in consumers:
            consumer.stop()
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        for consumer in consumers:
            if not consumer.join(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "%s %s: did not stop in time; releasing its lease", self.config.group, consumer.shard_id
                )
                with contextlib.suppress(Exception):
                    self.store.release(consumer.shard_id, self.worker_id, consumer.lease.counter)
        self.consumers.clear()
        self.metrics.leases_owned.labels(self.config.group).set(0)


def install_signal_handlers(*workers: ConsumerWorker) -> None:
    """SIGTERM and SIGINT stop the workers cleanly (main thread only, as Python requires)."""

    def _stop(_signum: int, _frame: Any) -> None:
        for worker in workers:
            worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
