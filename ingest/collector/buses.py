"""The stream bus the collector writes to, chosen by ``settings.collector_bus``.

``stream`` is the real one (Kinesis: kinesalite locally, AWS unchanged). ``noop`` accepts every
record and keeps none: a benchmarking aid that shows the collector's own ceiling (parsing,
validation, serialisation, HTTP) without the stream's cost. Never use it for real traffic.
"""

from __future__ import annotations

from collections.abc import Sequence

from lambdalake.settings import Settings
from lambdalake.stream import (
    Position,
    PutOutcome,
    ReadBatch,
    Record,
    ShardInfo,
    StreamBus,
    StreamError,
)

NOOP_SHARD = "noop"


class NoopBus:
    """A StreamBus that takes every record and keeps none (see the module docstring)."""

    def put_records(self, stream: str, records: Sequence[Record]) -> list[PutOutcome]:
        return [PutOutcome(NOOP_SHARD, str(index)) for index in range(len(records))]

    def list_shards(self, stream: str) -> list[ShardInfo]:
        return []

    def shard_iterator(self, stream: str, shard_id: str, position: Position) -> str:
        raise StreamError("the noop bus keeps no records to read")

    def read(self, shard_id: str, iterator: str, limit: int = 1000) -> ReadBatch:
        raise StreamError("the noop bus keeps no records to read")


def collector_bus(settings: Settings) -> StreamBus:
    """The bus for the collector, with timeouts short enough to answer a client promptly."""
    if settings.collector_bus == "noop":
        return NoopBus()
    from lambdalake.stream.kinesis import KinesisBus, kinesis_client

    client = kinesis_client(settings, timeout=settings.collector_stream_timeout_s, retries=1)
    return KinesisBus(settings, client=client)
