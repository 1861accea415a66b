"""The stream bus: what producers and consumers need from a stream, independent of the engine.

Kinesis is the first implementation (kinesalite locally, AWS unchanged); Redis Streams or Kafka
can be added behind the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Record:
    """A record to put: its bytes and the key that picks its shard (user_id, else anonymous_id)."""

    data: bytes
    partition_key: str


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """Where a put record landed."""

    shard_id: str
    sequence_number: str


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A record read from a shard."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival_ts: float  # approximate arrival time, epoch seconds


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard_id: str
    parent_shard_id: str | None
    adjacent_parent_shard_id: str | None
    starting_sequence_number: str
    ending_sequence_number: str | None  # set once the shard is closed (after a reshard)
    hash_key_range: tuple[int, int]

    @property
    def is_open(self) -> bool:
        return self.ending_sequence_number is None


PositionKind = Literal[
    "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"
]


@dataclass(frozen=True, slots=True)
class Position:
    """Where to start reading a shard."""

    kind: PositionKind
    sequence_number: str | None = None
    timestamp: datetime | None = None

    @classmethod
    def after(cls, sequence_number: str) -> Position:
        return cls("AFTER_SEQUENCE_NUMBER", sequence_number=sequence_number)


TRIM_HORIZON = Position("TRIM_HORIZON")
LATEST = Position("LATEST")


@dataclass(frozen=True, slots=True)
class ReadBatch:
    records: list[StreamRecord]
    next_iterator: str | None  # None once a closed shard has been read to its end
    millis_behind_latest: int


class StreamError(Exception):
    """The stream could not take or give records after bounded retries."""


class StreamThrottled(StreamError):
    """Records were still throttled after every retry; ``failed`` holds their indexes."""

    def __init__(self, message: str, failed: Sequence[int], retry_after_s: float) -> None:
        super().__init__(message)
        self.failed = list(failed)
        self.retry_after_s = retry_after_s


class StreamBus(Protocol):
    def put_records(self, stream: str, records: Sequence[Record]) -> list[PutOutcome]:
        """Put every record (batched, retrying only the failed ones) or raise StreamError."""
        ...

    def list_shards(self, stream: str) -> list[ShardInfo]: ...

    def shard_iterator(self, stream: str, shard_id: str, position: Position) -> str: ...

    def read(self, shard_id: str, iterator: str, limit: int = 1000) -> ReadBatch:
        """Up to ``limit`` records from an iterator of ``shard_id``, and the iterator to go on with."""
        ...
