"""Shard leases: which worker of a consumer group reads which shard, and up to where it has.

A lease is (shard, owner, counter, expiry, checkpoint, parents). Every change is a conditional
update, as in KCL's lease table:

- ``take`` succeeds only if the counter is still the one the taker observed and the lease is free
  or expired (or, when stealing, still held by the owner the taker chose); it bumps the counter.
  So of two workers racing for a shard exactly one wins, and the counter is a fencing token.
- ``renew``, ``release`` and ``checkpoint`` succeed only for the owner holding that counter, so a
  worker whose lease was taken over can neither extend it nor move its checkpoint.

Expiry is measured on the store's clock (Redis ``TIME``), never on the workers' clocks. A worker
additionally stops processing a shard on its own monotonic clock once the lease may have expired
(see ``worker.py``), before the store would let anyone else take it.

``plan_takes`` is the pure balancing decision (take free or expired leases up to an even share,
else steal from the most loaded worker), unit-tested without a store.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lambdalake.consumer.checkpoints import SHARD_END

TakeMode = Literal["expired", "steal"]


@dataclass(frozen=True, slots=True)
class Lease:
    shard_id: str
    owner: str  # "" when free
    counter: int
    expires_ms: int
    checkpoint: str
    parents: tuple[str, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.checkpoint == SHARD_END

    def is_expired(self, now_ms: int) -> bool:
        return not self.owner or self.expires_ms <= now_ms


@dataclass(frozen=True, slots=True)
class NewLease:
    shard_id: str
    parents: tuple[str, ...]
    checkpoint: str


@dataclass(frozen=True, slots=True)
class Take:
    lease: Lease
    mode: TakeMode


class LeaseStore(Protocol):
    """Lease table of one consumer group. Redis today; a DynamoDB table can implement the same
    operations with conditional writes (ConditionExpression on owner and counter)."""

    group: str

    def create_missing(self, leases: Sequence[NewLease]) -> int:
        """Create leases for shards that have none; existing leases are left untouched."""
        ...

    def list_leases(self) -> tuple[list[Lease], int]:
        """Every lease of the group and the store's clock (epoch milliseconds)."""
        ...

    def take(
        self, shard_id: str, worker: str, observed: Lease, mode: TakeMode, duration_ms: int
    ) -> Lease | None:
        """Take a lease as observed; None if it changed meanwhile (someone else won)."""
        ...

    def renew(self, worker: str, held: dict[str, int], duration_ms: int) -> dict[str, bool]:
        """Extend the leases ``held`` (shard -> counter); False for those no longer ours."""
        ...

    def release(self, shard_id: str, worker: str, counter: int) -> bool: ...

    def checkpoint(self, shard_id: str, worker: str, counter: int, value: str) -> bool:
        """Record progress if ``worker`` still holds the lease at ``counter``; finishing a shard
        (``SHARD_END``) also frees the lease."""
        ...

    def delete(self, shard_ids: Iterable[str]) -> None: ...


def _ready(lease: Lease, by_id: dict[str, Lease]) -> bool:
    """A shard may be read once every parent we track is finished (per-key order across a reshard)."""
    if lease.is_finished:
        return False
    return all(parent not in by_id or by_id[parent].is_finished for parent in lease.parents)


def plan_takes(
    leases: Sequence[Lease], worker: str, now_ms: int, rng: random.Random | None = None
) -> list[Take]:
    """The leases ``worker`` should try to take now to move the group towards an even split.

    Workers are known by the live leases they hold (plus ``worker`` itself). The target is
    ceil(readable shards / workers). Free or expired leases are taken first; only when there are
    none does the worker steal, from the most loaded worker, as many as it lacks and that worker
    has above target (or one when both are at target and this worker lacks two or more).
    """
    rng = rng or random.Random()
    by_id = {lease.shard_id: lease for lease in leases}
    readable = [lease for lease in leases if _ready(lease, by_id)]
    if not readable:
        return []
    live = Counter(lease.owner for lease in readable if not lease.is_expired(now_ms))
    workers = set(live) | {worker}
    target = math.ceil(len(readable) / len(workers))
    needed = target - live.get(worker, 0)
    if needed <= 0:
        return []
    free = [lease for lease in readable if lease.is_expired(now_ms)]
    if free:
        rng.shuffle(free)
        return [Take(lease, "expired") for lease in free[:needed]]
    others = [(count, owner) for owner, count in live.items() if owner != worker]
    if not others:
        return []
    most, victim = max(others, key=lambda item: (item[0], item[1]))
    if most > target:
        count = min(needed, most - target)
    elif most == target and needed > 1:
        count = 1
    else:
        return []
    victims = [lease for lease in readable if lease.owner == victim and not lease.is_expired(now_ms)]
    rng.shuffle(victims)
    return [Take(lease, "steal") for lease in victims[:count]]


# Redis layout, per group (the group is a hash tag so a group's keys share one cluster slot):
#   <prefix>:{<group>}:shards        set of shard ids with a lease
#   <prefix>:{<group>}:lease:<shard> hash: owner, counter, expires_ms, checkpoint, parents
_NOW_MS = (
    "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)

_CREATE = """
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', '', 'counter', '0', 'expires_ms', '0', 'checkpoint', ARGV[3],
           'parents', ARGV[2])
return 1
"""

_TAKE = (
    _NOW_MS
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'counter', 'expires_ms', 'checkpoint')
if not h[2] or h[2] ~= ARGV[2] or h[4] == 'SHARD_END' then return false end
if ARGV[4] == 'steal' then
  if h[1] ~= ARGV[5] then return false end
elseif h[1] ~= '' and tonumber(h[3]) > now then
  return false
end
local counter = string.format('%d', tonumber(h[2]) + 1)
local expires = string.format('%d', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'counter', counter, 'expires_ms', expires)
return {counter, expires, h[4]}
"""
)

_RENEW = (
    _NOW_MS
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'counter')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'expires_ms', string.format('%d', now + tonumber(ARGV[3])))
return 1
"""
)

_RELEASE = """
local h = redis.call('HMGET', KEYS[1], 'owner', 'counter')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '', 'expires_ms', '0')
return 1
"""

_CHECKPOINT = """
local h = redis.call('HMGET', KEYS[1], 'owner', 'counter')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[3])
if ARGV[3] == 'SHARD_END' then redis.call('HSET', KEYS[1], 'owner', '', 'expires_ms', '0') end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLeaseStore:
    """LeaseStore on Redis: every conditional update is one Lua script, so it is atomic."""

    def __init__(self, redis: Any, group: str, key_prefix: str) -> None:
        self.redis = redis
        self.group = group
        self.base = f"{key_prefix}:{{{group}}}"
        self._create = redis.register_script(_CREATE)
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._checkpoint = redis.register_script(_CHECKPOINT)

    @property
    def shards_key(self) -> str:
        return f"{self.base}:shards"

    def lease_key(self, shard_id: str) -> str:
        return f"{self.base}:lease:{shard_id}"

    def create_missing(self, leases: Sequence[NewLease]) -> int:
        if not leases:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for lease in leases:
            self._create(
                keys=[self.lease_key(lease.shard_id), self.shards_key],
                args=[lease.shard_id, ",".join(lease.parents), lease.checkpoint],
                client=pipe,
            )
        return sum(int(created) for created in pipe.execute())

    def list_leases(self) -> tuple[list[Lease], int]:
        shard_ids = sorted(_text(s) for s in self.redis.smembers(self.shards_key))
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        for shard_id in shard_ids:
            pipe.hgetall(self.lease_key(shard_id))
        seconds, micros = (results := pipe.execute())[0]
        leases = []
        for shard_id, raw in zip(shard_ids, results[1:], strict=True):
            if not raw:
                continue
            fields = {_text(k): _text(v) for k, v in raw.items()}
            leases.append(
                Lease(
                    shard_id=shard_id,
                    owner=fields.get("owner", ""),
                    counter=int(fields.get("counter", "0")),
                    expires_ms=int(fields.get("expires_ms", "0")),
                    checkpoint=fields.get("checkpoint", ""),
                    parents=tuple(p for p in fields.get("parents", "").split(",") if p),
                )
            )
        return leases, int(seconds) * 1000 + int(micros) // 1000

    def take(
        self, shard_id: str, worker: str, observed: Lease, mode: TakeMode, duration_ms: int
    ) -> Lease | None:
        result = self._take(
            keys=[self.lease_key(shard_id)],
            args=[worker, str(observed.counter), str(duration_ms), mode, observed.owner],
        )
        if not result:
            return None
        counter, expires, checkpoint = (_text(v) for v in result)
        return Lease(shard_id, worker, int(counter), int(expires), checkpoint, observed.parents)

    def renew(self, worker: str, held: dict[str, int], duration_ms: int) -> dict[str, bool]:
        pipe = self.redis.pipeline(transaction=False)
        shard_ids = list(held)
        for shard_id in shard_ids:
            self._renew(
                keys=[self.lease_key(shard_id)],
                args=[worker, str(held[shard_id]), str(duration_ms)],
                client=pipe,
            )
        return {shard_id: bool(ok) for shard_id, ok in zip(shard_ids, pipe.execute(), strict=True)}

    def release(self, shard_id: str, worker: str, counter: int) -> bool:
        return bool(self._release(keys=[self.lease_key(shard_id)], args=[worker, str(counter)]))

    def checkpoint(self, shard_id: str, worker: str, counter: int, value: str) -> bool:
        return bool(self._checkpoint(keys=[self.lease_key(shard_id)], args=[worker, str(counter), value]))

    def delete(self, shard_ids: Iterable[str]) -> None:
        ids = list(shard_ids)
        if ids:
            pipe = self.redis.pipeline(transaction=True)
            pipe.srem(self.shards_key, *ids)
            pipe.delete(*(self.lease_key(s) for s in ids))
            pipe.execute()
