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
