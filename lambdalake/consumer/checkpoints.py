"""Checkpoint values and where a shard's reading starts from them.

A checkpoint lives in the shard's lease (one record per group and shard, as in KCL's lease table),
so it is written with the same conditional update that proves ownership: a worker whose lease was
taken over cannot move the checkpoint. A value is one of:

- a sequence number: every record up to and including it has been processed;
- ``SHARD_END``: the shard is closed and fully processed, so its children may start;
- an initial-position sentinel (``TRIM_HORIZON``, ``LATEST``, ``AT_TIMESTAMP``) set when the
  lease is created: nothing processed yet.
"""

from __future__ import annotations

from collections.abc import Collection

from lambdalake.consumer.config import ConsumerConfig
from lambdalake.stream.bus import LATEST, TRIM_HORIZON, Position, ShardInfo

SHARD_END = "SHARD_END"
INITIAL_SENTINELS = frozenset({"TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"})


def is_sequence(value: str) -> bool:
    return value.isdigit()


def initial_checkpoint(shard: ShardInfo, known_shard_ids: Collection[str], config: ConsumerConfig) -> str:
    """A child of a shard we read starts at its beginning whatever the group's starting position:
    its parent's records end where its own begin, so LATEST would skip records written in between."""
    parents = (shard.parent_shard_id, shard.adjacent_parent_shard_id)
    if any(parent and parent in known_shard_ids for parent in parents):
        return "TRIM_HORIZON"
    return config.starting_position


def start_position(checkpoint: str, config: ConsumerConfig) -> Position | None:
    """Where to resume reading a shard; None when the shard is finished."""
    if checkpoint == SHARD_END:
        return None
    if is_sequence(checkpoint):
        return Position.after(checkpoint)
    if checkpoint == "LATEST":
        return LATEST
    if checkpoint == "AT_TIMESTAMP":
        # The timestamp is the group's setting; without one, reading everything loses nothing.
        if config.starting_timestamp is None:
            return TRIM_HORIZON
        return Position("AT_TIMESTAMP", timestamp=config.starting_timestamp)
    if checkpoint == "TRIM_HORIZON":
        return TRIM_HORIZON
    raise ValueError(f"unknown checkpoint value {checkpoint!r}")
