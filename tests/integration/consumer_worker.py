"""Test support for the consumer runtime: an idempotent Redis ledger processor, event helpers, and a
worker entry point the kill tests run as a separate process.

    python tests/integration/consumer_worker.py --group G --stream S --ns NS [--delay S] [--lease S]

Settings (ports, home) come from the LAMBDALAKE_* environment, as for any lambdalake process.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from lambdalake.consumer import BatchContext, ConsumerConfig, ConsumerWorker, install_signal_handlers
from lambdalake.consumer.leases import Lease, RedisLeaseStore
from lambdalake.settings import Settings
from lambdalake.stream import Position, Record, StreamBus, StreamRecord

# Applies the records above the shard's high-water mark, and the hwm, atomically. `hits` counts
# applications past the hwm (the runtime + hwm guarantee); `applied` and the per-key order list
# count only the first application of an event_id (client-level dedupe, as the views do).
LEDGER_LUA = """
local function gt(a, b)
  if b == false or b == '' then return true end
  if #a ~= #b then return #a > #b end
  return a > b
end
local ns, shard = ARGV[1], ARGV[2]
local hwm = redis.call('HGET', ns .. ':hwm', shard)
redis.call('HINCRBY', ns .. ':stats', 'delivered', (#ARGV - 2) / 3)
for i = 3, #ARGV, 3 do
  local seq, id, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if gt(seq, hwm) then
    hwm = seq
    redis.call('HINCRBY', ns .. ':hits', id, 1)
    if redis.call('SET', ns .. ':seen:' .. id, '1', 'NX') then
      redis.call('HINCRBY', ns .. ':applied', id, 1)
      redis.call('RPUSH', ns .. ':order:' .. key, id)
    end
  end
end
if hwm then redis.call('HSET', ns .. ':hwm', shard, hwm) end
return 1
"""


class LedgerProcessor:
    """Idempotent test processor. ``delay`` sleeps between the two halves of a batch, so a kill
    lands between two side effects of one unfinished batch; records with "poison" raise."""

    def __init__(self, redis: Any, ns: str, delay: float = 0.0) -> None:
        self.redis = redis
        self.ns = ns
        self.delay = delay
        self.script = redis.register_script(LEDGER_LUA)
        self.shard_id = ""

    def initialize(self, shard_id: str, start_position: Position) -> None:
        self.shard_id = shard_id
        self.redis.rpush(f"{self.ns}:lifecycle", f"init:{shard_id}:{start_position.kind}")

    def _apply(self, records: list[StreamRecord]) -> None:
        args: list[str] = [self.ns, self.shard_id]
        for record in records:
            event = orjson.loads(record.data)
            args += [record.sequence_number, event["event_id"], record.partition_key]
        self.script(args=args)

    def process_records(self, records: list[StreamRecord], ctx: BatchContext) -> None:
        sizes_key = f"{self.ns}:poison_batch_sizes"
        for record in records:
            if b'"poison":true' in record.data:
                self.redis.rpush(sizes_key, len(records))
                raise ValueError(f"poison record {record.sequence_number}")
        middle = len(records) // 2
        self._apply(records[:middle])
        if self.delay:
            time.sleep(self.delay)
        self._apply(records[middle:])

    def shutdown(self, reason: str) -> None:
        self.redis.rpush(f"{self.ns}:lifecycle", f"end:{self.shard_id}:{reason}")


@dataclass
class Ledger:
    """What a test reads back from Redis."""

    hits: dict[str, int]
    applied: dict[str, int]
    delivered: int

    @classmethod
    def read(cls, redis: Any, ns: str) -> Ledger:
        hits = {k.decode(): int(v) for k, v in redis.hgetall(f"{ns}:hits").items()}
        applied = {k.decode(): int(v) for k, v in redis.hgetall(f"{ns}:applied").items()}
        return cls(hits, applied, int(redis.hget(f"{ns}:stats", "delivered") or 0))


def order_of(redis: Any, ns: str, key: str) -> list[str]:
    return [v.decode() for v in redis.lrange(f"{ns}:order:{key}", 0, -1)]


def lifecycle(redis: Any, ns: str) -> list[str]:
    return [v.decode() for v in redis.lrange(f"{ns}:lifecycle", 0, -1)]


def make_events(count: int, users: int = 20, poison: Iterable[int] = ()) -> list[dict[str, Any]]:
    bad = set(poison)
    return [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": f"u{i % users}",
            "n": i,
            **({"poison": True} if i in bad else {}),
        }
        for i in range(count)
    ]


def put_events(bus: StreamBus, stream: str, events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Put events (partition key user_id) and return each key's event ids in stream order."""
    outcomes = bus.put_records(stream, [Record(orjson.dumps(e), e["user_id"]) for e in events])
    placed = sorted(
        zip(outcomes, events, strict=True), key=lambda p: (p[0].shard_id, int(p[0].sequence_number))
    )
    order: dict[str, list[str]] = defaultdict(list)
    for _outcome, event in placed:
        order[event["user_id"]].append(event["event_id"])
    return order


def leases(redis: Any, group: str, settings: Settings) -> list[Lease]:
    return RedisLeaseStore(redis, group, settings.consumer_key_prefix).list_leases()[0]


def main(argv: list[str] | None = None) -> int:
    import redis as redis_lib

    parser = argparse.ArgumentParser()
    parser.add_argument("--group", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--ns", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(threadName)s %(message)s"
    )
    settings = Settings()
    redis = redis_lib.Redis.from_url(settings.redis_url)
    config = ConsumerConfig.from_settings(
        settings,
        args.group,
        stream=args.stream,
        lease_duration_s=args.lease,
        batch_size=args.batch_size,
        idle_poll_s=0.05,
        shard_sync_s=1.0,
    )
    worker = ConsumerWorker(
        settings, config, lambda: LedgerProcessor(redis, args.ns, args.delay), redis=redis
    )
    install_signal_handlers(worker)
    redis.rpush(f"{args.ns}:workers", worker.worker_id)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
