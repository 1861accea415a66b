"""Time in the serving layer: epoch seconds inside, ISO-8601 UTC strings ending in ``Z`` outside."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

Granularity = Literal["minute", "hour", "day"]
GRANULARITY_S: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
GRANULARITY_WINDOW: dict[str, str] = {"minute": "1m", "hour": "1h", "day": "1d"}
HOUR_S = 3600
DAY_S = 86400


def parse_time(text: str) -> int:
    """Epoch seconds of an ISO-8601 time (``Z`` or an offset; no offset means UTC), to the second."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time such as 2026-11-22T09:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def iso(epoch_s: float) -> str:
    """``2026-11-22T09:00:00Z`` (whole seconds)."""
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_datetime(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def to_epoch(moment: datetime) -> int:
    """Epoch seconds of a datetime; naive ones are UTC (the warehouse's TIMESTAMP columns)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def floor(epoch_s: float, size_s: int) -> int:
    return int(epoch_s // size_s) * size_s


def ceil(epoch_s: float, size_s: int) -> int:
    return -int(-epoch_s // size_s) * size_s


def now() -> float:
    return time.time()
