"""The record-processor contract (KCL's lifecycle) that every consumer group implements.

Lifecycle, per shard lease:

1. ``initialize(shard_id, start_position)`` once, before the first batch of this lease.
2. ``process_records(records, ctx)`` for each batch, in shard order. The runtime checkpoints the
   batch only after this returns; if it raises, the runtime retries (bisecting the batch when the
   group says so) and finally sends the records that still fail to the group's DLQ stream.
3. ``shutdown(reason)`` once:
   - ``TERMINATE``: the shard is closed (resharded) and fully processed; flush anything buffered
     now, because the runtime checkpoints ``SHARD_END`` right after and the children then start.
   - ``ZOMBIE``: the lease was lost (stolen, expired); another worker owns the shard. Do not
     write anything more for it.
   - ``REQUESTED``: the worker is stopping (SIGTERM); the lease is released right after.

Delivery is at-least-once: after a crash, a lost lease or a retry, a batch is delivered again, in
whole or in part. A processor makes its side effects effectively-once by making them idempotent per
record. The runtime gives it what it needs: the shard id and every record's sequence number, which
increase strictly within a shard and are totally ordered across retries and takeovers. The
recommended pattern for a Redis-backed processor keeps its own per-shard sequence high-water mark
(``hwm``) and applies, in one Lua script or MULTI/EXEC, only the records with a sequence number
above it together with the new ``hwm``. Then a redelivered record is a no-op, a zombie that lost
its lease cannot apply a record twice, and the runtime's checkpoint (written after
``process_records`` returns) is only an optimisation of where reading restarts. Processors whose
sink is a file (lake delivery) get the same effect from deterministic names derived from the shard
and the sequence range, so a rewrite replaces.

Pipelining (optional): a processor whose side effects travel over one ordered connection (a
Redis pipeline) can also implement ``submit_records`` and ``finish`` (``PipelinedProcessor``). The
runtime then submits the next batch before the previous ones are known durable, so the processor
works on the next batch while its sink still applies the last one, instead of both taking turns at
every batch's end. ``submit_records`` returns how many of the batches submitted before it (oldest
first) are now durable; ``flush`` sends what it held back for the next batch when none has come;
``finish`` returns once all are durable. The runtime checkpoints a batch only
once it is durable. If either raises, no batch not yet reported durable may be taken as durable:
the runtime delivers each of them (and the one being submitted) again, the usual way
(``process_records``, retries, bisect, DLQ), and the processor's idempotence skips what did land.
The runtime flushes when the next batch has not been read yet, and finishes when none comes
within a poll (an idle shard) or the shard ends.

Errors: raise ``RetryLater`` (or let a connection/timeout error through) when the sink is
unavailable; the runtime then retries the same batch with backoff, indefinitely, without counting
attempts or sending anything to the DLQ, because a sink outage is not the records' fault. Any other
exception counts as a failure of the records in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from lambdalake.stream.bus import Position, StreamRecord

ShutdownReason = Literal["TERMINATE", "ZOMBIE", "REQUESTED"]


class RetryLater(Exception):
    """The sink is unavailable: retry the same batch later; the records are not at fault."""


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What a processor knows about the batch it is given."""

    group: str
    stream: str
    shard_id: str
    worker_id: str
    lease_counter: int  # changes whenever the shard changes owner: a fencing token
    millis_behind_latest: int
    attempt: int  # 1 on first delivery of these records, higher on retries


class RecordProcessor(Protocol):
    def initialize(self, shard_id: str, start_position: Position) -> None: ...

    def process_records(self, records: list[StreamRecord], ctx: BatchContext) -> None:
        """Apply the batch's side effects idempotently; return only once they are durable."""
        ...

    def shutdown(self, reason: ShutdownReason) -> None: ...


def sequence_key(sequence_number: str) -> int:
    """Kinesis sequence numbers are decimal strings of varying length: compare them as integers."""
    return int(sequence_number)


class PipelinedProcessor(RecordProcessor, Protocol):
    def submit_records(self, records: list[StreamRecord], ctx: BatchContext) -> int:
        """Send the batch's side effects without waiting for them to be durable; return how many of
        the batches submitted before (oldest first) are durable now. On an exception, take none of
        those not yet reported, nor this one, as durable."""
        ...

    def flush(self) -> None:
        """Send whatever was held back for the next batch, without waiting: none has come yet."""
        ...

    def finish(self) -> None:
        """Return once every batch submitted is durable."""
        ...


def is_pipelined(processor: RecordProcessor) -> bool:
    return callable(getattr(processor, "submit_records", None)) and callable(
        getattr(processor, "finish", None)
    )
