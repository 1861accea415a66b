"""Delivering one batch to a processor: retries, bisect on error, record age, dead letters.

Semantics follow Lambda's Kinesis event source mapping:

- A batch that fails is retried up to ``max_retry_attempts`` times (-1: forever), with jittered
  exponential backoff.
- With ``bisect_on_error`` a failing batch is split in two halves delivered in order, recursively,
  so a single poison record is isolated and only it exhausts its retries; splits do not count as
  retries (as in Lambda).
- Records older than ``max_record_age_s`` (by arrival time) are not delivered: they go to the
  on-failure destination with reason ``record_age_exceeded`` (Lambda does the same).
- Records that exhausted their retries go to the on-failure destination with the last error.

Transient sink failures (``RetryLater``, connection and timeout errors) are not the records' fault:
the same slice is retried with backoff until it succeeds or the worker stops, never counted and
never dead-lettered. A failing dead-letter write is retried the same way: a record leaves the
shard only by being processed or by being durably dead-lettered.

With a pipelined processor (``PipelinedDelivery``) batches are submitted ahead of being durable; when
the pipeline fails, each batch not yet durable is delivered again by the same policy, so the
semantics above hold for them.

This module has no I/O of its own: the worker passes in the processor call, the dead-letter
writer and an interruptible ``wait``, so the logic is unit-tested on in-memory lists.
"""

from __future__ import annotations

import builtins
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from lambdalake.consumer.config import ConsumerConfig
from lambdalake.consumer.processor import RetryLater
from lambdalake.stream.bus import StreamRecord
from lambdalake.stream.kinesis import backoff_delay

FailureReason = Literal["retries_exhausted", "record_age_exceeded"]


@dataclass(frozen=True, slots=True)
class Failure:
    records: list[StreamRecord]
    reason: FailureReason
    error: str
    error_type: str
    attempts: int


@dataclass(slots=True)
class DeliveryOutcome:
    processed: int = 0
    dead_lettered: int = 0
    retries: int = 0


class Abandoned(Exception):
    """Delivery stopped before the batch was complete (worker stopping or lease lost): the batch
    must not be checkpointed."""


def default_is_transient(exc: BaseException) -> bool:
    """Sink outages: the processor says so, or the OS/driver reports a connection or timeout."""
    if isinstance(exc, RetryLater | builtins.ConnectionError | builtins.TimeoutError):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_retry_attempts: int = 3
    bisect_on_error: bool = True
    max_record_age_s: float = -1.0
    backoff_s: float = 0.2
    backoff_cap_s: float = 10.0

    @classmethod
    def of(cls, config: ConsumerConfig) -> DeliveryPolicy:
        return cls(
            max_retry_attempts=config.max_retry_attempts,
            bisect_on_error=config.bisect_on_error,
            max_record_age_s=config.max_record_age_s,
            backoff_s=config.retry_backoff_s,
            backoff_cap_s=config.retry_backoff_cap_s,
        )


class BatchDelivery:
    """Deliver a batch under a policy. ``process(records, attempt)`` applies the side effects;
    ``dead_letter(failure)`` writes to the on-failure destination; ``wait(seconds)`` sleeps and
    returns False if the worker must stop (then ``Abandoned`` is raised); ``now()`` is epoch time."""

    def __init__(
        self,
        policy: DeliveryPolicy,
        process: Callable[[list[StreamRecord], int], None],
        dead_letter: Callable[[Failure], None],
        wait: Callable[[float], bool],
        now: Callable[[], float],
        is_transient: Callable[[BaseException], bool] = default_is_transient,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.process = process
        self.dead_letter = dead_letter
        self.wait = wait
        self.now = now
        self.is_transient = is_transient
        self.rng = rng

    def deliver(
        self, records: Sequence[StreamRecord], outcome: DeliveryOutcome | None = None
    ) -> DeliveryOutcome:
        outcome = outcome if outcome is not None else DeliveryOutcome()
        self._deliver(list(records), outcome)
        return outcome

    def drop_aged(self, records: list[StreamRecord], outcome: DeliveryOutcome) -> list[StreamRecord]:
        """Dead-letter the records past ``max_record_age_s``; return the others."""
        return self._drop_aged(records, outcome, 0)

    def _backoff(self, attempt: int) -> None:
        delay = backoff_delay(attempt, self.policy.backoff_s, self.policy.backoff_cap_s, self.rng)
        if not self.wait(delay):
            raise Abandoned("stopped while waiting to retry")

    def _drop_aged(
        self, records: list[StreamRecord], outcome: DeliveryOutcome, attempts: int
    ) -> list[StreamRecord]:
        if self.policy.max_record_age_s < 0:
            return records
        oldest_allowed = self.now() - self.policy.max_record_age_s
        aged = [r for r in records if r.arrival_ts < oldest_allowed]
        if not aged:
            return records
        error = f"older than max_record_age_s={self.policy.max_record_age_s:g}"
        self._send(Failure(aged, "record_age_exceeded", error, "RecordAgeExceeded", attempts), outcome)
        return [r for r in records if r.arrival_ts >= oldest_allowed]

    def _send(self, failure: Failure, outcome: DeliveryOutcome) -> None:
        attempt = 0
        while True:
            try:
                self.dead_letter(failure)
            except Exception:  # noqa: BLE001 - the destination is down: retry, never drop the records
                self._backoff(attempt)
                attempt += 1
                continue
            outcome.dead_lettered += len(failure.records)
            return

    def _deliver(self, records: list[StreamRecord], outcome: DeliveryOutcome) -> None:
        failures = 0
        transient = 0
        while True:
            records = self._drop_aged(records, outcome, failures)
            if not records:
                return
            try:
                self.process(records, failures + 1)
            except Abandoned:
                raise
            except Exception as exc:  # noqa: BLE001 - any processor error is handled by the policy
                outcome.retries += 1
                if self.is_transient(exc):
                    self._backoff(transient)
                    transient += 1
                    continue
                failures += 1
                if self.policy.bisect_on_error and len(records) > 1:
                    middle = len(records) // 2
                    self._deliver(records[:middle], outcome)
                    self._deliver(records[middle:], outcome)
                    return
                limit = self.policy.max_retry_attempts
                if limit >= 0 and failures > limit:
                    error = f"{type(exc).__name__}: {exc}"
                    self._send(
                        Failure(records, "retries_exhausted", error, type(exc).__name__, failures), outcome
                    )
                    return
                self._backoff(failures - 1)
                continue
            outcome.processed += len(records)
            return


@dataclass(frozen=True, slots=True)
class Delivered:
    """A batch as read (checkpoint at its last record) whose records are all durable: processed or
    dead-lettered."""

    records: list[StreamRecord]
    outcome: DeliveryOutcome


@dataclass(slots=True)
class _Submitted:
    records: list[StreamRecord]
    fresh: list[StreamRecord]  # the records submitted: the batch less those dead-lettered as aged
    outcome: DeliveryOutcome


class PipelinedDelivery:
    """Deliver batches to a pipelined processor (``submit``/``flush``/``finish``, processor.py), which
    may hold several submitted and not yet durable. Each call returns the batches that became
    durable, in shard order, for the worker to checkpoint. When the processor raises, every batch
    not yet durable goes through ``delivery.deliver``, the usual path with its retries, bisect and
    dead letters, in order; the failure in the pipeline is not counted as an attempt."""

    def __init__(
        self,
        delivery: BatchDelivery,
        submit: Callable[[list[StreamRecord]], int],
        flush: Callable[[], None],
        finish: Callable[[], None],
    ) -> None:
        self.delivery = delivery
        self.submit = submit
        self.flush_processor = flush
        self.finish = finish
        self.pending: deque[_Submitted] = deque()

    def deliver(self, records: list[StreamRecord]) -> list[Delivered]:
        outcome = DeliveryOutcome()
        fresh = self.delivery.drop_aged(records, outcome)
        if not fresh:
            return [*self.drain(), Delivered(records, outcome)]
        self.pending.append(_Submitted(records, fresh, outcome))
        return self._guarded(lambda: self.submit(fresh))

    def flush(self) -> list[Delivered]:
        """Let the processor send what it held for a next batch (delivering again if that fails)."""
        return self._guarded(self.flush_processor) if self.pending else []

    def drain(self) -> list[Delivered]:
        """Wait until every batch submitted is durable (delivering them again if that fails)."""

        def finish() -> int:
            self.finish()
            return len(self.pending)

        return self._guarded(finish) if self.pending else []

    def _guarded(self, step: Callable[[], int | None]) -> list[Delivered]:
        """Run a pipeline step that returns how many batches became durable (None: none). If it
        raises, whatever failed, the usual path finds whose records it was: every pending batch is
        delivered again. Abandoned (the lease is gone) passes through."""
        try:
            durable = step()
        except Abandoned:
            raise
        except Exception:  # noqa: BLE001 - the usual path tells the records' errors apart
            return self._again()
        return self._durable(durable or 0)

    def _durable(self, count: int) -> list[Delivered]:
        done = []
        for _ in range(min(count, len(self.pending))):
            batch = self.pending.popleft()
            batch.outcome.processed += len(batch.fresh)
            done.append(Delivered(batch.records, batch.outcome))
        return done

    def _again(self) -> list[Delivered]:
        done = []
        while self.pending:
            batch = self.pending[0]
            done.append(Delivered(batch.records, self.delivery.deliver(batch.fresh, batch.outcome)))
            self.pending.popleft()
        return done
