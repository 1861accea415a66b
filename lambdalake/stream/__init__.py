"""Stream bus: producers and consumers talk to the stream only through this interface."""

from lambdalake.settings import Settings
from lambdalake.stream.bus import (
    LATEST,
    TRIM_HORIZON,
    Position,
    PutOutcome,
    ReadBatch,
    Record,
    ShardInfo,
    StreamBus,
    StreamError,
    StreamRecord,
    StreamThrottled,
)


def get_bus(settings: Settings) -> StreamBus:
    """The stream bus for the configured profile (Kinesis on both today)."""
    from lambdalake.stream.kinesis import KinesisBus

    return KinesisBus(settings)


__all__ = [
    "LATEST",
    "TRIM_HORIZON",
    "Position",
    "PutOutcome",
    "ReadBatch",
    "Record",
    "ShardInfo",
    "StreamBus",
    "StreamError",
    "StreamRecord",
    "StreamThrottled",
    "get_bus",
]
