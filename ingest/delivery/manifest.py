"""Hour completeness: per-shard event-time watermarks, and the ``_manifest.json`` that closes an hour.

Watermark: per shard, the highest event time seen in records already written to files, with event
time capped at the record's arrival time. The maximum (not a low watermark over buffered records)
because delivery holds nothing back: every record is in a file once its batch returns, so the
only question is how long to wait for stragglers, and that is the allowed lateness. A low
watermark would let one mobile client replaying yesterday's offline events hold every hour open;
here such events are simply late: they land in a new file and the hour's manifest is rewritten
with the next version, which tells the batch layer to reprocess the hour.

An hour closes when every shard's watermark is past its end plus the allowed lateness. A shard
that is caught up (or never had a record) and silent for ``delivery_idle_shard_s`` does not hold
hours open; when every shard is idle the stream is quiet, and the highest watermark counts.

State: watermarks and the set of hours with files not yet in a manifest ("dirty", with a
generation counter) live in Redis (append-only locally, small and written on every flush, shared
by every delivery worker). Manifests, the contract with the batch layer, live in the lake next to
the files they list. Losing the Redis state loses no data: watermarks restart from the next records
and only the closing of hours written meanwhile is delayed until they are written to again.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingest.delivery.layout import (
    HOUR,
    MANIFEST_NAME,
    DataFileName,
    hour_key,
    manifest_path,
    parse_hour_key,
    raw_hour_prefix,
)
from lambdalake import lake
from lambdalake.settings import Settings

MANIFEST_FORMAT = 1
LOCK_TTL_MS = 60_000

# KEYS: watermarks, dirty. ARGV: shard, wm_ms (-1: none in this flush), now_ms, caught_up, ended, hours...
# A mark is "wm_ms:updated_ms:caught_up:ended"; the watermark only moves forward.
RECORD_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local wm = tonumber(ARGV[2])
if cur then
  local old = tonumber(string.match(cur, '^(-?%d+):'))
  if old > wm then wm = old end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%s:%s:%s', wm, ARGV[3], ARGV[4], ARGV[5]))
for i = 6, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
return wm
"""

# KEYS: dirty. ARGV: hour, generation read before the manifest was built.
CLEAR_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class ShardMark:
    wm_ms: int  # -1 until the shard wrote a record
    updated_ms: int
    caught_up: bool
    ended: bool

    @classmethod
    def parse(cls, text: str) -> ShardMark:
        wm, updated, caught_up, ended = text.split(":")
        return cls(int(wm), int(updated), caught_up == "1", ended == "1")


@dataclass(frozen=True, slots=True)
class FileStat:
    name: DataFileName
    rows: int
    bytes: int


def global_watermark(
    marks: dict[str, ShardMark],
    now_ms: int,
    idle_ms: int,
    required: Collection[str] = (),
    held: Collection[str] | None = None,
) -> int | None:
    """The stream's watermark (epoch ms): the lowest of the live, non-idle shards; None if unknown.

    Idle means caught up (or never written), silent for ``idle_ms`` and, when ``held`` is given,
    leased by a live worker: a shard whose worker died looks silent but may have a backlog."""
    if any(shard not in marks for shard in required):
        return None

    def idle(shard: str, m: ShardMark) -> bool:
        quiet = (m.caught_up or m.wm_ms < 0) and now_ms - m.updated_ms >= idle_ms
        return quiet and (held is None or shard in held)

    live = {shard: m for shard, m in marks.items() if not m.ended}
    active = [m for shard, m in live.items() if not idle(shard, m)]
    if active:
        if any(m.wm_ms < 0 for m in active):
            return None
        return min(m.wm_ms for m in active)
    seen = [m.wm_ms for m in marks.values() if m.wm_ms >= 0]
    return max(seen) if seen else None


def closable_hours(dirty: Iterable[str], watermark_ms: int | None, lateness_s: int) -> list[str]:
    """Dirty hours whose end plus the allowed lateness the watermark has passed, oldest first."""
    if watermark_ms is None:
        return []
    out = []
    for key in dirty:
        end = parse_hour_key(key) + HOUR + timedelta(seconds=lateness_s)
        if end.timestamp() * 1000 <= watermark_ms:
            out.append(key)
    return sorted(out)


def build_manifest(
    hour: datetime,
    files: list[FileStat],
    version: int,
    closed_at: datetime,
    watermark_ms: int,
    lateness_s: int,
) -> dict[str, Any]:
    """The manifest of a closed hour: its files, row counts and sequence range per shard."""
    ordered = sorted(files, key=lambda f: (f.name.shard_id, int(f.name.first_sequence)))
    shards: dict[str, dict[str, Any]] = {}
    for f in ordered:
        entry = shards.setdefault(
            f.name.shard_id,
            {
                "files": 0,
                "rows": 0,
                "min_sequence": f.name.first_sequence,
                "max_sequence": f.name.last_sequence,
            },
        )
        entry["files"] += 1
        entry["rows"] += f.rows
        if int(f.name.first_sequence) < int(entry["min_sequence"]):
            entry["min_sequence"] = f.name.first_sequence
        if int(f.name.last_sequence) > int(entry["max_sequence"]):
            entry["max_sequence"] = f.name.last_sequence
    return {
        "manifest_format": MANIFEST_FORMAT,
        "hour": hour_key(hour),
        "version": version,
        "closed_at": closed_at.astimezone(UTC).isoformat(),
        "watermark": datetime.fromtimestamp(watermark_ms / 1000, UTC).isoformat(),
        "allowed_lateness_s": lateness_s,
        "rows": sum(f.rows for f in ordered),
        "files": [
            {
                "name": f.name.name,
                "shard_id": f.name.shard_id,
                "rows": f.rows,
                "bytes": f.bytes,
                "min_sequence": f.name.first_sequence,
                "max_sequence": f.name.last_sequence,
            }
            for f in ordered
        ],
        "shards": shards,
    }


def read_manifest(settings: Settings, hour: datetime) -> dict[str, Any] | None:
    uri = lake.join(settings.lake_uri, manifest_path(hour))
    if not lake.exists(uri, settings):
        return None
    return dict(orjson.loads(lake.read_bytes(uri, settings)))


def hour_files(settings: Settings, hour: datetime) -> list[FileStat]:
    """The data files of an hour with their row counts (from the Parquet footers)."""
    import pyarrow.parquet as pq

    out = []
    prefix = lake.join(settings.lake_uri, raw_hour_prefix(hour))
    for uri, size in lake.list_files(prefix, settings, recursive=False):
        name = DataFileName.parse(uri)
        if name is None:
            continue
        filesystem, path = lake.filesystem(uri, settings)
        with filesystem.open_input_file(path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        out.append(FileStat(name, rows, size))
    return out


class HourState:
    """Watermarks and dirty hours in Redis, shared by every worker of the delivery group."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.marks_key = f"{prefix}:watermarks"
        self.dirty_key = f"{prefix}:dirty"
        self.lock_prefix = f"{prefix}:close-lock"
        self._record = redis.register_script(RECORD_LUA)
        self._clear = redis.register_script(CLEAR_LUA)
        self._unlock = redis.register_script(UNLOCK_LUA)

    def record(
        self,
        shard_id: str,
        watermark_ms: int | None,
        now_ms: int,
        caught_up: bool,
        hours: Iterable[str] = (),
        ended: bool = False,
    ) -> None:
        """After files are durable: move the shard's watermark and mark their hours dirty."""
        wm = -1 if watermark_ms is None else watermark_ms
        args = [shard_id, wm, now_ms, int(caught_up), int(ended), *sorted(set(hours))]
        self._record(keys=[self.marks_key, self.dirty_key], args=args)

    def marks(self) -> dict[str, ShardMark]:
        raw = self.redis.hgetall(self.marks_key)
        return {k.decode(): ShardMark.parse(v.decode()) for k, v in raw.items()}

    def dirty(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.dirty_key).items()}

    def clear_if_unchanged(self, hour: str, generation: int) -> bool:
        return bool(self._clear(keys=[self.dirty_key], args=[hour, generation]))

    def lock(self, hour: str) -> str | None:
        token = uuid.uuid4().hex
        if self.redis.set(f"{self.lock_prefix}:{hour}", token, nx=True, px=LOCK_TTL_MS):
            return token
        return None

    def unlock(self, hour: str, token: str) -> None:
        self._unlock(keys=[f"{self.lock_prefix}:{hour}"], args=[token])


class HourCloser:
    """Writes the manifest of every dirty hour the watermark has closed (any worker may run it)."""

    def __init__(self, settings: Settings, state: HourState) -> None:
        self.settings = settings
        self.state = state

    def close_ready(
        self, now: datetime, required_shards: Collection[str] = (), held: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Close what is ready; returns the manifests written."""
        settings = self.settings
        now_ms = int(now.timestamp() * 1000)
        idle_ms = int(settings.delivery_idle_shard_s * 1000)
        watermark = global_watermark(self.state.marks(), now_ms, idle_ms, required_shards, held)
        dirty = self.state.dirty()
        written = []
        for key in closable_hours(dirty, watermark, settings.delivery_allowed_lateness_s):
            assert watermark is not None
            manifest = self.close_hour(key, dirty[key], watermark, now)
            if manifest is not None:
                written.append(manifest)
        return written

    def close_hour(
        self, key: str, generation: int, watermark_ms: int, now: datetime
    ) -> dict[str, Any] | None:
        token = self.state.lock(key)
        if token is None:
            return None  # another worker is closing it
        try:
            hour = parse_hour_key(key)
            previous = read_manifest(self.settings, hour)
            version = (previous or {}).get("version", 0) + 1
            manifest = build_manifest(
                hour,
                hour_files(self.settings, hour),
                version,
                now,
                watermark_ms,
                self.settings.delivery_allowed_lateness_s,
            )
            if previous and "compaction" in previous:
                # the hour's compaction history (batch.compaction) outlives late data's new version
                manifest["compaction"] = previous["compaction"]
            uri = lake.join(self.settings.lake_uri, raw_hour_prefix(hour), MANIFEST_NAME)
            lake.write_bytes(uri, orjson.dumps(manifest, option=orjson.OPT_INDENT_2), self.settings)
            # Files written while this manifest was built bumped the generation: the hour stays dirty.
            self.state.clear_if_unchanged(key, generation)
            return manifest
        finally:
            self.state.unlock(key, token)
