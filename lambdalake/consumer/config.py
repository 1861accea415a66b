"""Per-group knobs of the consumer runtime, shaped after Lambda's Kinesis event source mapping.

Defaults come from the ``consumer_*`` settings; ``settings.consumer_groups[<group>]`` overrides any
field for one group. The defaults are the safe ones: a failing record is retried a bounded number
of times (bisecting the batch down to it), then sent to the DLQ so the shard moves on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from lambdalake.settings import Settings
from lambdalake.stream.bus import LATEST, TRIM_HORIZON, Position

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """How one consumer group reads its stream and what it does with records that fail."""

    group: str
    stream: str
    on_failure_stream: str
    batch_size: int = 500
    max_batching_window_s: float = 0.0
    max_retry_attempts: int = 3  # -1: forever (Lambda's default, which can stall a shard)
    max_record_age_s: float = -1.0  # -1: no limit
    bisect_on_error: bool = True
    starting_position: StartingPosition = "TRIM_HORIZON"
    starting_timestamp: datetime | None = None
    lease_duration_s: float = 10.0
    idle_poll_s: float = 0.2
    shard_sync_s: float = 30.0
    retry_backoff_s: float = 0.2
    retry_backoff_cap_s: float = 10.0
    shutdown_timeout_s: float = 20.0
    key_prefix: str = "lambdalake:consumer"

    def __post_init__(self) -> None:
        problems = []
        if not self.group or any(c in self.group for c in "{}: "):
            problems.append(f"group name {self.group!r} must be non-empty without braces, colons or spaces")
        if not 1 <= self.batch_size <= 10000:
            problems.append(f"batch_size {self.batch_size} must be within 1..10000")
        if self.max_batching_window_s < 0:
            problems.append("max_batching_window_s must be >= 0")
        if self.max_retry_attempts < -1:
            problems.append("max_retry_attempts must be >= -1")
        if self.max_record_age_s != -1 and self.max_record_age_s <= 0:
            problems.append("max_record_age_s must be -1 (no limit) or > 0")
        if self.starting_position == "AT_TIMESTAMP" and self.starting_timestamp is None:
            problems.append("starting_position AT_TIMESTAMP needs starting_timestamp")
        if self.lease_duration_s <= 0:
            problems.append("lease_duration_s must be > 0")
        if problems:
            raise ValueError(f"consumer group {self.group!r}: " + "; ".join(problems))

    @property
    def renew_interval_s(self) -> float:
        """Leases are renewed three times per duration, so one slow renewal never loses a lease."""
        return self.lease_duration_s / 3

    @property
    def initial_position(self) -> Position:
        """Where a shard with no checkpoint and no tracked parent starts."""
        if self.starting_position == "LATEST":
            return LATEST
        if self.starting_position == "AT_TIMESTAMP":
            return Position("AT_TIMESTAMP", timestamp=self.starting_timestamp)
        return TRIM_HORIZON

    @classmethod
    def from_settings(
        cls, settings: Settings, group: str, stream: str | None = None, **overrides: Any
    ) -> ConsumerConfig:
        """The group's config: settings defaults, then ``consumer_groups[group]``, then ``overrides``."""
        values: dict[str, Any] = {
            "group": group,
            "stream": stream or settings.stream_name,
            "on_failure_stream": settings.consumer_on_failure_stream or settings.dlq_stream_name,
            "batch_size": settings.consumer_batch_size,
            "max_batching_window_s": settings.consumer_max_batching_window_s,
            "max_retry_attempts": settings.consumer_max_retry_attempts,
            "max_record_age_s": settings.consumer_max_record_age_s,
            "bisect_on_error": settings.consumer_bisect_on_error,
            "starting_position": settings.consumer_starting_position,
            "starting_timestamp": settings.consumer_starting_timestamp,
            "lease_duration_s": settings.consumer_lease_duration_s,
            "idle_poll_s": settings.consumer_idle_poll_s,
            "shard_sync_s": settings.consumer_shard_sync_s,
            "retry_backoff_s": settings.consumer_retry_backoff_s,
            "retry_backoff_cap_s": settings.consumer_retry_backoff_cap_s,
            "shutdown_timeout_s": settings.consumer_shutdown_timeout_s,
            "key_prefix": settings.consumer_key_prefix,
        }
        per_group = dict(settings.consumer_groups.get(group, {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((set(per_group) | set(overrides)) - known)
        if unknown:
            raise ValueError(f"consumer group {group!r}: unknown settings {unknown}; known: {sorted(known)}")
        values.update(per_group)
        values.update(overrides)
        if isinstance(values["starting_timestamp"], str):
            values["starting_timestamp"] = datetime.fromisoformat(values["starting_timestamp"])
        return cls(**values)
