"""Effectively-once application of a batch: one Lua call per batch, fenced by the shard's state.

Every group (views, alerts, enrich) applies a batch the same way:

1. Records at or below the shard's sequence high-water mark (``hwm``) were applied already: a
   replay (restart, retry, lease takeover) skips them.
2. The rest are parsed; unreadable ones are counted (``invalid``) and skipped.
3. Duplicates sent by clients (an ``event_id`` already in the group's seen-set, or earlier in the
   batch) are skipped; the seen-set is split by event-time hour, since a resend carries the same
   event and so the same ``ts``, and each hour expires ``speed_dedupe_ttl_s`` after it ends (or
   after the record arrived, for events that were late already).
4. The group turns the remaining events into updates, pre-aggregated per key.
5. One Lua script checks that the shard's ``hwm`` is still the one the batch was built on and that
   none of its event_ids has been seen meanwhile, then applies every update, adds the event_ids to
   the seen-set, moves ``hwm`` and the watermark and adds the batch's counters — all or nothing.
   If a check fails (another worker applied records of this shard meanwhile: a zombie or a
   takeover), nothing is written; the processor reloads the state and builds the batch again.

The ``hwm`` makes a replay a no-op and fences a zombie; the seen-set catches resends; the
runtime's checkpoint is only where reading restarts.

A batch goes to Redis as chunks, one script call each, pipelined (``_Flow``). While a shard has a
backlog the runtime submits batch after batch (``submit_records``): the chunks of consecutive
batches then flow as one, so Redis applies a batch's tail while Python builds the next one's head,
and a batch is reported durable once its last chunk's reply is read. The same fence makes that
safe: a chunk refused, or any error, fails every chunk after it, and the runtime delivers the
batches not yet durable again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import ormsgpack
from hiredis import pack_command
from redis.exceptions import NoScriptError

from lambdalake.consumer.processor import BatchContext, RetryLater
from lambdalake.contract import EventValidator
from lambdalake.settings import Settings
from lambdalake.stream.bus import Position, StreamRecord
from speed_layer.keys import SEEN_BUCKET_S, SpeedKeys
from speed_layer.metrics import SpeedMetrics
from speed_layer.records import ParsedRecord, parse_records

MAX_CONFLICTS = 5
SEEN_CHUNK = 1000
CHUNK = 500  # records per script call; a batch's chunks are pipelined (docs/benchmarks.md)
FIRST_CHUNK = 100  # a batch starts with a short chunk, so Redis has work soon
LAST_CHUNK = 50  # and ends with one: Python waits only for it to be applied
BUILDER_BATCHES = 16  # a pipelined flow's builder starts afresh after this many batches (_Flow)


def chunk_bounds(
    n: int, size: int = CHUNK, last: int = LAST_CHUNK, first: int = FIRST_CHUNK
) -> list[tuple[int, int]]:
    """(start, end) of a batch's chunks: the first ``first`` records, then ``size`` records each,
    the final ``last`` on their own; a batch of up to ``2 * last`` records is one chunk."""
    if n <= 2 * last:
        return [(0, n)]
    head = min(first, n - last)
    cuts = [0, *range(head, n - last, size)]
    if n - cuts[-1] > 2 * last or len(cuts) == 1:  # the last chunk is not short already
        cuts.append(n - last)
    return list(zip(cuts, [*cuts[1:], n], strict=True))


# KEYS: none (every key is in the payload: the script is not Redis-Cluster safe yet, see docs).
# ARGV[1]: MessagePack (≈80% of cjson's instructions to decode, docs/benchmarks.md):
#   {state, expect, hwm, maxts, now, seen: [[key, expireat, ids...]], stats: key,
#    counts: {field: n}, ops: [kind, ecmd, earg, only_if_created, count, key, argc, args..., ...]}
# The ops are one flat array (``encode_ops``) of groups: the ops of one kind and one expiry share
# their head (kind, ecmd, earg, only_if_created) and each op is its key, argc and args. Decoding
# builds no table per op (a table and a growing array per op made MessagePack a fifth of the
# script), and a chunk's few thousand ops fall in a few dozen groups, so half of the values decoded
# were the heads repeated (docs/benchmarks.md, speed).
# A group's expiry: ``ecmd`` EXPIREAT or EXPIRE with ``earg``, or false for none; only_if_created (not
# for cooc, hset, zadd, xadd): set it only when the op may have created the key — the caller knows
# the key's expiry is set already (a window key's expiry never changes; a sliding one was refreshed
# recently, see compiler.payload). "May have": counters, sums, min/max and last know; zincr, pfadd
# and lastn tell from their first reply, which can say "created" for a key that existed (an extra
# expiry, harmless) but never the reverse. Sums, min and max write with SET, which takes the expiry
# itself (EXAT/EX, Redis 6.2) when it is due and known before the write: a sum or min that creates
# its key (they read it first), and any of them asked to refresh. Not on every write: an expiry in a
# SET costs what an EXPIRE does (Redis rewrites both for the AOF), so a max that may create its key
# keeps its EXPIRE after the SET, as before.
# Arguments Redis takes are strings, and values the script compares come as numbers beside them:
# a number passed to redis.call is formatted with %.17g and tonumber() parses a string twice.
# Returns {1} applied, {0} hwm moved, {-1, event_id} an event_id was seen meanwhile.
APPLY_LUA = r"""
local p = cmsgpack.unpack(ARGV[1])
local SET_EXPIRY = {EXPIREAT = 'EXAT', EXPIRE = 'EX'}
local current = redis.call('HGET', p.state, 'hwm') or ''
if current ~= p.expect then return {0} end
for _, s in ipairs(p.seen) do
  local ids = {unpack(s, 3)}
  local found = redis.call('SMISMEMBER', s[1], unpack(ids))
  for i = 1, #found do
    if found[i] == 1 then return {-1, ids[i]} end
  end
end
for _, s in ipairs(p.seen) do
  redis.call('SADD', s[1], unpack(s, 3))
  local ttl = redis.call('TTL', s[1])
  if ttl < 0 or ttl < s[2] - p.now then redis.call('EXPIREAT', s[1], s[2]) end
end
local ops, i, n = p.ops, 1, #p.ops
while i <= n do
  local kind, gcmd, earg, only, count = ops[i], ops[i + 1], ops[i + 2], ops[i + 3], ops[i + 4]
  i = i + 5
  for _ = 1, count do
    local key, ecmd = ops[i], gcmd
    local a = i + 2  -- the op's first argument; its last is z
    local z = i + 1 + ops[i + 1]
    i = z + 1
    local created = false  -- the op made the key: counters, sums, min/max and last can tell for free
    if kind == 'incr' then  -- n as a string, then as a number
      created = redis.call('INCRBY', key, ops[a]) == ops[a + 1]
    elseif kind == 'incrf' then
      -- not INCRBYFLOAT: Redis 6.2 can crash when a script's INCRBYFLOAT follows a many-argument call.
      -- 15 significant digits are exact for a double and drop the binary noise
      -- (427.03, not 427.03000000000003).
      local stored = redis.call('GET', key)  -- and SET ... KEEPTTL below: a plain SET drops the TTL
      created = not stored
      local sum = string.format('%.15g', (tonumber(stored) or 0) + tonumber(ops[a]))
      if ecmd and (created or not only) then
        redis.call('SET', key, sum, SET_EXPIRY[ecmd], earg)
        ecmd = false
      else
        redis.call('SET', key, sum, 'KEEPTTL')
      end
    elseif kind == 'pfadd' then
      created = redis.call('PFADD', key, unpack(ops, a, z)) == 1  -- 1 whenever it creates the key
    elseif kind == 'max' then  -- the value as a string, then as a number
      -- one call when the value grows (event times mostly do), a second to put a greater one back
      local stored
      if ecmd and not only then
        stored = redis.call('SET', key, ops[a], SET_EXPIRY[ecmd], earg, 'GET')
        ecmd = false
      else
        stored = redis.call('SET', key, ops[a], 'KEEPTTL', 'GET')
        created = not stored
      end
      local old = tonumber(stored)  -- nil for a value that is not a number: replaced, as before
      if old and old > ops[a + 1] then redis.call('SET', key, stored, 'KEEPTTL') end
    elseif kind == 'min' then
      local stored = tonumber(redis.call('GET', key))
      created = not stored
      if not stored or ops[a + 1] < stored then
        if ecmd and (created or not only) then
          redis.call('SET', key, ops[a], SET_EXPIRY[ecmd], earg)
          ecmd = false
        else
          redis.call('SET', key, ops[a], 'KEEPTTL')
        end
      end
    elseif kind == 'last' then  -- time as a string, value, time as a number
      local stored = tonumber(redis.call('HGET', key, 't'))
      created = not stored
      if not stored or stored <= ops[a + 2] then
        redis.call('HSET', key, 't', ops[a], 'v', ops[a + 1])
      end
    elseif kind == 'zincr' then  -- increments written as Redis writes scores (%.17g)
      -- a key this op creates gets its first member new: the first score equals its increment
      created = redis.call('ZINCRBY', key, ops[a], ops[a + 1]) == ops[a]
      for j = a + 2, z, 2 do redis.call('ZINCRBY', key, ops[j], ops[j + 1]) end
    elseif kind == 'lastn' then  -- ZREMRANGEBYRANK's stop, then score/member pairs
      created = redis.call('ZADD', key, 'GT', unpack(ops, a + 1, z)) > 0  -- members added: > 0 if created
      redis.call('ZREMRANGEBYRANK', key, '0', ops[a])
    elseif kind == 'cooc' then  -- the item sets' prefix and expiry, then the items
      local prefix, icmd, iarg = ops[a], ops[a + 1], ops[a + 2]
      for j = a + 3, z do
        local item = ops[j]
        if redis.call('SISMEMBER', key, item) == 0 then
          for _, other in ipairs(redis.call('SMEMBERS', key)) do
            redis.call('ZINCRBY', prefix .. item, '1', other)
            -- the other item's set had its expiry from its own view; a first pair may create it
            if redis.call('ZINCRBY', prefix .. other, '1', item) == '1' and icmd then
              redis.call(icmd, prefix .. other, iarg)
            end
          end
          redis.call('SADD', key, item)
          if icmd then redis.call(icmd, prefix .. item, iarg) end
        end
      end
    elseif kind == 'hset' then
      redis.call('HSET', key, unpack(ops, a, z))
    elseif kind == 'zadd' then
      redis.call('ZADD', key, unpack(ops, a + 1, z))
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ops[a])
    elseif kind == 'xadd' then
      redis.call('XADD', key, 'MAXLEN', '~', ops[a], '*', unpack(ops, a + 1, z))
    end
    if ecmd and (created or not only) then redis.call(ecmd, key, earg) end
  end
end
redis.call('HSET', p.state, 'hwm', p.hwm, 'maxts', p.maxts)
for name, count in pairs(p.counts) do
  if count ~= 0 then redis.call('HINCRBY', p.stats, name, count) end
end
return {1}
"""


def expire_command(expiry: int) -> tuple[Any, str]:
    """An op's expiry on the wire: > 0 EXPIREAT it, < 0 EXPIRE -it, 0 none (false)."""
    if expiry > 0:
        return "EXPIREAT", str(expiry)
    if expiry < 0:
        return "EXPIRE", str(-expiry)
    return False, ""


def evalsha_command(sha: str | bytes, argument: bytes) -> bytes:
    """``EVALSHA sha 0 argument`` in the Redis protocol. redis-py's packer (hiredis) copies a large
    argument at ≈0.5 GB/s: 274 µs for a 150 KB chunk, ≈0.5 µs per event; a join copies at memory
    speed."""
    digest = sha.encode() if isinstance(sha, str) else sha
    head = b"*4\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$1\r\n0\r\n$%d\r\n" % (len(digest), digest, len(argument))
    return b"".join((head, argument, b"\r\n"))


def pack_commands(commands: Iterable[tuple[Any, ...]]) -> bytes:
    """Commands (of str, bytes and numbers) in the Redis protocol, packed by hiredis one by one.
    redis-py's ``pack_commands`` first walks every argument in Python: 0.7 µs per argument here,
    1.5 µs per event for a chunk's dedupe and prefetch lookups (docs/benchmarks.md, speed)."""
    return b"".join([pack_command(command) for command in commands])


def encode_ops(ops: Iterable[Sequence[Any]]) -> list[Any]:
    """``[kind, key, expiry, args...]`` ops (expiry as ``[e]``: only if the op created the key) in
    the script's flat wire form, consecutive ops of one kind and expiry in one group; the args as the
    script takes them (see ``ViewOps.payload``)."""
    flat: list[Any] = []
    group: tuple[Any, ...] = ()
    at = 0  # where the current group's op count is
    for kind, key, expiry, *args in ops:
        only = isinstance(expiry, list)
        head = (kind, *expire_command(expiry[0] if only else expiry), only)
        if head != group:
            group, at = head, len(flat) + 4
            flat += (*head, 0)
        flat[at] += 1
        flat += (key, len(args), *args)
    return flat


def decode_ops(flat: Sequence[Any]) -> list[list[Any]]:
    """The flat wire form back as ``[kind, key, expiry or [expiry], args...]`` ops (for reading)."""
    ops, i = [], 0
    while i < len(flat):
        kind, command, argument, only, count = flat[i : i + 5]
        expiry = {"EXPIREAT": 1, "EXPIRE": -1}.get(command, 0) * int(argument or 0)
        i += 5
        for _ in range(count):
            key, argc = flat[i], flat[i + 1]
            ops.append([kind, key, [expiry] if only else expiry, *flat[i + 2 : i + 2 + argc]])
            i += 2 + argc
    return ops


@dataclass(frozen=True, slots=True)
class ShardState:
    hwm: str  # sequence number of the last applied record; "" before the first
    maxts: float  # the greatest event time applied on the shard (the watermark's base)

    @property
    def hwm_int(self) -> int:
        return int(self.hwm) if self.hwm else -1


@dataclass
class BatchCounts:
    applied: int = 0
    skipped: int = 0  # of event types the group does nothing with (not remembered for dedupe either)
    duplicates: int = 0
    replayed: int = 0
    invalid: int = 0
    late_events: int = 0
    late_windows: dict[str, int] = field(default_factory=dict)

    def as_fields(self) -> dict[str, int]:
        fields = {
            "applied": self.applied,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "replayed": self.replayed,
            "invalid": self.invalid,
            "late_events": self.late_events,
        }
        fields.update({f"late_events:{w}": n for w, n in self.late_windows.items()})
        return fields


class BatchBuilder(Protocol):
    """What a group does with a batch's new events; built fresh for every attempt."""

    def merge(self, prefetched: Any) -> None:
        """Take what ``prefetch`` read for a chunk about to be added, keeping what the builder holds
        already (it is newer: the read may predate the chunks before it being applied)."""
        ...

    def add(self, parsed: ParsedRecord, watermark: float) -> Collection[str]:
        """Take one new event; return the windows it came too late for (empty: applied in full)."""
        ...

    def drain(self) -> tuple[list[Any], Any]:
        """The updates taken since the last drain (ops in the flat wire form, ``encode_ops``), and
        a note for ``committed`` once they are durable."""
        ...


class Lookups:
    """Reads queued for one round trip on the batch's connection; each reply comes back raw."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def add(self, *command: Any) -> None:
        self.commands.append(command)

    def __len__(self) -> int:
        return len(self.commands)


def prefetch_user_field(
    chunk: list[ParsedRecord], lookups: Lookups, key_of: Callable[[str], str], field: str
) -> Callable[[list[Any]], dict[str, Any]]:
    """Queue an HGET of ``field`` of each user's hash (``key_of(user_id)``) for a chunk's events;
    return what turns the replies into {user: the JSON it holds, or None}."""
    users = sorted({u for p in chunk if p.event is not None and (u := p.event.get("user_id"))})
    for user in users:
        lookups.add("HGET", key_of(user), field)
    return lambda replies: {
        user: orjson.loads(raw) if raw else None for user, raw in zip(users, replies, strict=True)
    }


class EffectivelyOnceProcessor:
    """The shared half of every speed-layer RecordProcessor; a group supplies ``builder``."""

    group = "speed"
    # The event types the group acts on (None: all). The others only move the shard's hwm: they
    # reach no builder and stay out of the seen-set, which costs ≈80 bytes of Redis per event_id
    # for a day (docs/operations.md, Redis memory).
    event_types: frozenset[str] | None = None

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        metrics: SpeedMetrics,
        stream: str | None = None,
        shared: Any = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.stream = stream or settings.stream_name
        self.keys = SpeedKeys(settings.speed_key_prefix)
        self.validator = (
            EventValidator(settings.strict_event_types) if settings.speed_validate_events else None
        )
        self.lateness = float(settings.allowed_lateness_s)
        self.future_skew = float(settings.speed_max_future_skew_s)
        self.dedupe_ttl = int(settings.speed_dedupe_ttl_s)
        self.sha = redis.script_load(APPLY_LUA)
        self._states: dict[str, ShardState] = {}
        self._flow: _Flow | None = None  # batches submitted and not finished (submit_records)

    def builder(self) -> BatchBuilder:
        raise NotImplementedError

    def prefetch(self, chunk: list[ParsedRecord], lookups: Lookups) -> Callable[[list[Any]], Any] | None:
        """Queue the reads the builder needs for a chunk's events (sent with the chunk's dedupe
        lookup: one round trip); return what turns their raw replies into ``merge``'s argument."""
        return None

    def committed(self, note: Any) -> None:
        """Called once a chunk is durable with what its builder's ``drain`` noted (e.g. alerts raised)."""

    @classmethod
    def shared_state(cls, settings: Settings, redis: Any, metrics: SpeedMetrics) -> Any:
        """Built once per process and given to every shard's processor (e.g. the compiled catalogue)."""
        return None

    @classmethod
    def background(cls, settings: Settings, redis: Any, metrics: SpeedMetrics) -> list[Any]:
        """Loops the group runs beside its consumer (objects with start/stop/join)."""
        return []

    # --- RecordProcessor ------------------------------------------------------------------------
    def initialize(self, shard_id: str, start_position: Position) -> None:
        self._abandon()
        self._states.pop(shard_id, None)

    def shutdown(self, reason: str) -> None:
        self._abandon()  # not checkpointed: a replay applies what did not, the hwm skips what did
        self._states.clear()

    def _abandon(self) -> None:
        flow, self._flow = self._flow, None
        if flow is not None:
            self._drop(flow.connection)

    def process_records(self, records: list[StreamRecord], ctx: BatchContext) -> None:
        if not records:
            return
        self.finish()  # the runtime never mixes the two, but a batch in flight goes first
        with self.metrics.batch_seconds.labels(self.group).time():
            for _ in range(MAX_CONFLICTS):
                if self._apply(ctx.shard_id, records):
                    return
                self._states.pop(ctx.shard_id, None)
                self.metrics.conflicts.labels(self.group).inc()
        raise RetryLater(f"{self.group}/{ctx.shard_id}: the shard's state kept moving under this batch")

    # --- the steps ------------------------------------------------------------------------------
    def state(self, shard_id: str) -> ShardState:
        state = self._states.get(shard_id)
        if state is None:
            key = self.keys.shard_state(self.group, self.stream, shard_id)
            hwm, maxts = self.redis.hmget(key, ["hwm", "maxts"])
            state = ShardState(hwm.decode() if hwm else "", float(maxts) if maxts else 0.0)
            self._states[shard_id] = state
        return state

    def seen_already(self, parsed: list[ParsedRecord], lookups: Lookups) -> Callable[[list[Any]], set[str]]:
        """Queue the lookup of the events' event_ids in the seen-sets; return what turns the replies
        into the set of those seen already."""
        by_hour: dict[int, list[str]] = {}
        for p in parsed:
            if p.event is not None:
                by_hour.setdefault(int(p.ts // SEEN_BUCKET_S), []).append(p.event["event_id"])
        asked: list[list[str]] = []
        for hour, ids in by_hour.items():
            for start in range(0, len(ids), SEEN_CHUNK):
                chunk = ids[start : start + SEEN_CHUNK]
                lookups.add("SMISMEMBER", self.keys.seen(self.group, hour * SEEN_BUCKET_S), *chunk)
                asked.append(chunk)

        def seen(replies: list[Any]) -> set[str]:
            found: set[str] = set()
            for chunk, hits in zip(asked, replies, strict=True):
                found.update(i for i, hit in zip(chunk, hits, strict=True) if hit)
            return found

        return seen

    def _apply(self, shard_id: str, records: list[StreamRecord]) -> bool:
        """Apply the records above the shard's hwm; False if another writer moved the state."""
        connection = self.redis.connection_pool.get_connection()
        try:
            flow = _Flow(self, shard_id, self.state(shard_id), connection)
            flow.submit(records)
            flow.finish()
        except (Refused, NoScriptError) as exc:  # NoScriptError: Redis restarted, lost its scripts
            self._drop(connection, exc=exc)
            return False
        except BaseException:
            self._drop(connection)
            raise
        self.redis.connection_pool.release(connection)
        return True

    # --- pipelined (lambdalake.consumer.processor.PipelinedProcessor) ----------------------------
    def submit_records(self, records: list[StreamRecord], ctx: BatchContext) -> int:
        """Send the batch's chunks behind those in flight; return how many batches submitted
        before are now durable. The last chunk waits for the next batch, so the batch boundary
        is a chunk boundary: Redis applies one batch's tail while Python builds the next's head."""
        with self.metrics.batch_seconds.labels(self.group).time():
            if self._flow is not None and self._flow.shard_id != ctx.shard_id:
                self.finish()  # one flow at a time (the runtime gives each shard its own processor)
            flow = self._flow
            if flow is None:
                connection = self.redis.connection_pool.get_connection()
                try:
                    flow = _Flow(self, ctx.shard_id, self.state(ctx.shard_id), connection)
                except BaseException:
                    self._drop(connection)
                    raise
                self._flow = flow
            try:
                flow.submit(records)
            except BaseException as exc:
                self._flow = None
                self._drop(flow.connection, flow.shard_id, exc)
                raise
            return flow.durable()

    def flush(self) -> None:
        """Send the chunk held for the next batch, without waiting: the shard has no next batch yet."""
        flow = self._flow
        if flow is None:
            return
        try:
            flow.flush()
        except BaseException as exc:
            self._flow = None
            self._drop(flow.connection, flow.shard_id, exc)
            raise

    def finish(self) -> None:
        flow, self._flow = self._flow, None
        if flow is None:
            return
        try:
            flow.finish()
        except BaseException as exc:
            self._drop(flow.connection, flow.shard_id, exc)
            raise
        self.redis.connection_pool.release(flow.connection)

    def _drop(self, connection: Any, shard_id: str | None = None, exc: BaseException | None = None) -> None:
        """Give up a connection whose replies are unread (a refused chunk's later ones are still on
        the wire), and the shard's state cached from it; load the script again if Redis lost it."""
        connection.disconnect()
        self.redis.connection_pool.release(connection)
        if shard_id is not None:
            self._states.pop(shard_id, None)
        if isinstance(exc, NoScriptError):
            self.sha = self.redis.script_load(APPLY_LUA)

    def _count(self, counts: BatchCounts) -> None:
        events = self.metrics.events
        for outcome in ("applied", "skipped", "duplicates", "replayed", "invalid"):
            n = getattr(counts, outcome)
            if n:
                events.labels(self.group, outcome).inc(n)
        for window, n in counts.late_windows.items():
            self.metrics.late_events.labels(self.group, window).inc(n)


class Refused(Exception):
    """A chunk's script found the shard's state moved (another writer): it applied nothing."""


class _Flow:
    """The chunks of one shard's consecutive batches on their way to Redis over one connection.

    Each chunk (``chunk_bounds`` of a batch) is its own script call fenced by the previous chunk's
    hwm, sent without waiting for its reply. A chunk is read (parsed, its event_ids looked up in
    the seen-sets, the group's prefetch: ``_read``) before the chunk before it is built and sent
    (``_send``), so its lookups go on the connection ahead of that script and their replies come
    back while Redis applies it: Redis applies chunk i while Python parses i+2 and builds i+1.
    The lookups of a chunk cannot see the chunk sent after them; the flow's own event_ids and
    builder state are known here, and any other writer's ids are caught by the script's own
    check. If one chunk is refused, every later one is too (its expected hwm was never written),
    and the state stays at the last chunk applied.

    The last chunk read waits (``held``) for the next one, also across batches: a batch's tail is
    sent once the next batch's head has been read, which is what lets Redis apply the one while
    Python works on the other. ``flush`` sends it (the shard has no next batch yet) and ``finish``
    also reads every reply. The builder and the
    seen ids carry over from batch to batch (a builder holds only what it loaded or made itself,
    so held state stays valid), and start afresh every ``BUILDER_BATCHES`` batches, the held
    chunk sent first so the new builder's first lookups see everything before them.
    """

    def __init__(
        self, processor: EffectivelyOnceProcessor, shard_id: str, state: ShardState, connection: Any
    ) -> None:
        self.processor = processor
        self.shard_id = shard_id
        self.connection = connection
        self.key = processor.keys.shard_state(processor.group, processor.stream, shard_id)
        self.top = state.hwm_int  # the last sequence number taken into the flow
        self.expect, self.maxts = state.hwm, state.maxts  # what the next script expects and moves
        self.builder = processor.builder()
        self.seen: set[str] = set()  # the builder's event_ids, and those its lookups found
        self.batches_in_builder = 0
        self.held: tuple[list[ParsedRecord], Callable[[], Any]] | None = None
        self.sent: deque[tuple[ShardState, BatchCounts, Any]] = deque()  # scripts not replied yet
        self.scripts_sent = 0
        self.scripts_read = 0
        self.chunks = 0  # chunks read into the flow
        self.boundaries: deque[int] = deque()  # per batch not reported durable: its last chunk

    def submit(self, records: list[StreamRecord]) -> None:
        fresh = [r for r in records if int(r.sequence_number) > self.top]
        if len(fresh) < len(records):
            self.processor._count(BatchCounts(replayed=len(records) - len(fresh)))
        if self.batches_in_builder >= BUILDER_BATCHES:
            self._restart_builder()
        self.batches_in_builder += 1
        if fresh:
            self.top = int(fresh[-1].sequence_number)
            for start, end in chunk_bounds(len(fresh)):
                chunk = self._read(fresh[start:end])  # on the wire before the held chunk's script
                if self.held is not None:
                    self._send(self.held)
                self.held = chunk
        self.boundaries.append(self.chunks)

    def durable(self) -> int:
        """How many batches submitted (oldest first) became durable since last asked."""
        n = 0
        while self.boundaries and self.boundaries[0] <= self.scripts_read:
            self.boundaries.popleft()
            n += 1
        return n

    def flush(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self._send(held)

    def finish(self) -> None:
        self.flush()
        while self.sent:
            self._take()

    def _restart_builder(self) -> None:
        self.flush()
        self.builder = self.processor.builder()
        self.seen = set()
        self.batches_in_builder = 0

    def _take(self) -> None:
        """Read the oldest script's reply and count what it applied."""
        new_state, counts, note = self.sent.popleft()
        result = self.connection.read_response()
        self.scripts_read += 1
        if int(result[0]) != 1:
            raise Refused(f"{self.processor.group}/{self.shard_id}: the shard's state moved")
        processor = self.processor
        processor._states[self.shard_id] = new_state
        processor._count(counts)
        processor.committed(note)

    def _read(self, records: list[StreamRecord]) -> tuple[list[ParsedRecord], Callable[[], Any]]:
        """Parse a chunk and send its lookups; return it and what reads their replies."""
        processor, connection = self.processor, self.connection
        types = processor.event_types
        chunk = parse_records(records, processor.validator)
        relevant = (
            chunk
            if types is None
            else [p for p in chunk if p.event is not None and p.event.get("event_type") in types]
        )
        lookups = Lookups()
        found = processor.seen_already(relevant, lookups)
        asked = len(lookups)
        prefetched = processor.prefetch(relevant, lookups)
        if lookups.commands:
            connection.send_packed_command([pack_commands(lookups.commands)])
        scripts_before = self.scripts_sent
        builder = self.builder
        self.chunks += 1

        def replies() -> Any:
            while lookups.commands and self.scripts_read < scripts_before:  # FIFO: scripts sent first
                self._take()
            raw = [connection.read_response() for _ in lookups.commands]
            self.seen.update(found(raw[:asked]))
            if prefetched is not None:
                builder.merge(prefetched(raw[asked:]))

        return chunk, replies

    def _send(self, read: tuple[list[ParsedRecord], Callable[[], Any]]) -> None:
        """Build a chunk read before and send its script."""
        chunk, replies = read
        replies()
        processor, seen = self.processor, self.seen
        keys, group = processor.keys, processor.group
        types = processor.event_types
        add = self.builder.add
        future_skew, lateness, dedupe_ttl = processor.future_skew, processor.lateness, processor.dedupe_ttl
        maxts = self.maxts
        counts = BatchCounts()
        new_ids: dict[int, tuple[list[int], list[str]]] = {}  # hour -> ([expireat], event_ids)
        applied = skipped = 0  # locals: most of enrich's events are skipped
        for p in chunk:
            event = p.event
            if event is None:
                counts.invalid += 1
                continue
            # A clock far ahead must not close every window: event time counts for the
            # watermark only up to a little past the record's arrival.
            ts, arrival = p.ts, p.record.arrival_ts
            counted = arrival + future_skew
            if ts < counted:
                counted = ts
            if counted > maxts:
                maxts = counted
            if types is not None and event.get("event_type") not in types:
                skipped += 1  # nothing for this group to do: the hwm moves past it
                continue
            event_id = event["event_id"]
            if event_id in seen:
                counts.duplicates += 1
                continue
            seen.add(event_id)
            late = add(p, maxts - lateness)
            applied += 1
            if late:
                counts.late_events += 1
                for window in late:
                    counts.late_windows[window] = counts.late_windows.get(window, 0) + 1
            hour = int(ts // SEEN_BUCKET_S) * SEEN_BUCKET_S
            ends = hour + SEEN_BUCKET_S
            expires = int(arrival if arrival > ends else ends) + dedupe_ttl
            entry = new_ids.get(hour)
            if entry is None:
                entry = new_ids[hour] = ([expires], [])
            elif expires > entry[0][0]:
                entry[0][0] = expires
            entry[1].append(event_id)
        counts.applied, counts.skipped = applied, skipped
        hwm = chunk[-1].record.sequence_number
        ops, note = self.builder.drain()
        payload = {
            "state": self.key,
            "expect": self.expect,
            "hwm": hwm,
            "maxts": repr(maxts),
            "now": int(time.time()),  # only to extend a seen-set's expiry, never to shorten it
            "seen": [
                [keys.seen(group, hour), expiry[0], *ids[i : i + SEEN_CHUNK]]
                for hour, (expiry, ids) in new_ids.items()
                for i in range(0, len(ids), SEEN_CHUNK)
            ],
            "stats": keys.stats(group),
            "counts": counts.as_fields(),
            "ops": ops,
        }
        self.connection.send_packed_command([evalsha_command(processor.sha, ormsgpack.packb(payload))])
        self.sent.append((ShardState(hwm, maxts), counts, note))
        self.scripts_sent += 1
        self.expect, self.maxts = hwm, maxts
