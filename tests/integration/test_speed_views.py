"""The views group on real Redis: equal to a ground truth computed independently from the generated
events, unchanged by replays, independent of batch boundaries, fenced against a zombie writer."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis as redis_lib

from ingest.generator import ClickstreamGenerator, Emitted, GeneratorConfig
from lambdalake.consumer.processor import BatchContext
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from speed_layer import apply
from speed_layer.metrics import SpeedMetrics
from speed_layer.query import SpeedQuery
from speed_layer.views import ViewsProcessor

pytestmark = pytest.mark.integration

LATENESS_S = 60
SHARDS = ("shardId-000000000000", "shardId-000000000001")


def speed_settings(engines: Settings, **overrides: Any) -> Settings:
    """The session's engines with a key prefix of this test's own, so tests never share views."""
    values = {
        "speed_key_prefix": f"t{uuid.uuid4().hex[:8]}",
        "allowed_lateness_s": LATENESS_S,
        "speed_validate_events": True,
    }
    values.update(overrides)
    return engines.model_copy(update=values)


def generated(events: int, seed: int = 11, **config: Any) -> list[Emitted]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    options = {"events_per_s": 10.0, "late_rate": 0.02, "duplicate_rate": 0.03, "malformed_rate": 0.01}
    options.update(config)
    return list(
        ClickstreamGenerator(GeneratorConfig(events=events, seed=seed, start=start, **options)).emitted()
    )


def in_memory_records(emitted: list[Emitted]) -> dict[str, list[StreamRecord]]:
    """Records per shard as the stream would hold them: keyed by user, in arrival order."""
    shards: dict[str, list[StreamRecord]] = defaultdict(list)
    for i, e in enumerate(emitted):
        try:
            event = orjson.loads(e.line)
            key = str(event.get("user_id") or event.get("anonymous_id") or i)
        except (orjson.JSONDecodeError, AttributeError):
            key = str(i)
        shard = SHARDS[int(hashlib.md5(key.encode()).hexdigest(), 16) % len(SHARDS)]
        sequence = str(49_000_000_000_000_000_000 + i)
        shards[shard].append(StreamRecord(shard, sequence, key, e.line, e.arrival_ms / 1000))
    return shards


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


@dataclass
class Truth:
    """A few views computed the plain way, straight from the generator's labelled lines."""

    page_views_1m: Counter = field(default_factory=Counter)
    revenue_1h: defaultdict = field(default_factory=lambda: defaultdict(float))
    user_events: Counter = field(default_factory=Counter)
    user_events_by_type: Counter = field(default_factory=Counter)
    user_value: defaultdict = field(default_factory=lambda: defaultdict(float))
    views_1m: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    units_1h: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    recent: defaultdict = field(default_factory=lambda: defaultdict(dict))
    session_products: defaultdict = field(default_factory=lambda: defaultdict(set))
    active_1h: defaultdict = field(default_factory=lambda: defaultdict(set))
    last_activity: dict = field(default_factory=dict)  # max event time per user
    session_span: dict = field(default_factory=dict)  # (first, last) event time per session
    late_events: int = 0

    def co_viewed(self) -> dict[str, Counter]:
        pairs: dict[str, Counter] = defaultdict(Counter)
        for products in self.session_products.values():
            for a in products:
                for b in products:
                    if a != b:
                        pairs[a][b] += 1
        return pairs


def ground_truth(
    by_shard: dict[str, list[tuple[float, Emitted]]], lateness: float = LATENESS_S, skew: float = 300
) -> Truth:
    """``by_shard``: (arrival seconds, labelled line) in each shard's order."""
    truth = Truth()
    seen: set[str] = set()
    for records in by_shard.values():
        newest = 0.0
        for arrival, emitted in records:
            if emitted.kind == "malformed":
                continue
            event = orjson.loads(emitted.line)
            ts = _ts(event)
            newest = max(newest, min(ts, arrival + skew))
            if event["event_id"] in seen:
                continue
            seen.add(event["event_id"])
            watermark = newest - lateness
            minute, hour = int(ts // 60) * 60, int(ts // 3600) * 3600
            minute_open, hour_open = minute + 60 > watermark, hour + 3600 > watermark
            truth.late_events += not (minute_open and hour_open)
            user = event.get("user_id") or event.get("anonymous_id")
            kind, props = event["event_type"], event["properties"]
            truth.user_events[user] += 1
            truth.user_events_by_type[(user, kind)] += 1
            truth.last_activity[user] = max(truth.last_activity.get(user, ts), ts)
            first, last = truth.session_span.get(event["session_id"], (ts, ts))
            truth.session_span[event["session_id"]] = (min(first, ts), max(last, ts))
            if hour_open:
                truth.active_1h[hour].add(user)
            if kind == "page_view" and minute_open:
                truth.page_views_1m[minute] += 1
            if kind == "product_view":
                if minute_open:
                    truth.views_1m[minute][props["product_id"]] += 1
                previous = truth.recent[user].get(props["product_id"], 0.0)
                truth.recent[user][props["product_id"]] = max(previous, ts)
                truth.session_products[event["session_id"]].add(props["product_id"])
            if kind == "purchase":
                truth.user_value[user] += props["amount"]
                if hour_open:
                    truth.revenue_1h[hour] += props["amount"]
                    for item in props["items"]:
                        truth.units_1h[hour][item["product_id"]] += item["quantity"]
    return truth


def run_in_memory(processor: ViewsProcessor, shards: dict[str, list[StreamRecord]], batch: int = 250) -> None:
    for shard, records in shards.items():
        ctx = BatchContext("views", processor.stream, shard, "test-worker", 1, 0, 1)
        for start in range(0, len(records), batch):
            processor.process_records(records[start : start + batch], ctx)


SUMS = (b":v:revenue:", b":v:user_lifetime_value:")


def snapshot(client: redis_lib.Redis, prefix: str, *zones: str) -> dict[bytes, Any]:
    """Every view key of a prefix (without the prefix; ``zones``: the key zones, views by default),
    dumped; sums as numbers, since float addition in another order may differ in the last digit."""
    keys = sorted(
        k for zone in zones or ("v",) for k in client.scan_iter(match=f"{prefix}:{zone}:*", count=1000)
    )
    out: dict[bytes, Any] = {}
    for key in keys:
        short = key[len(prefix) :]
        out[short] = (
            pytest.approx(float(client.get(key)), rel=1e-12) if short.startswith(SUMS) else client.dump(key)
        )
    return out


def assert_views_equal_truth(settings: Settings, client: redis_lib.Redis, truth: Truth) -> None:
    prefix = settings.speed_key_prefix
    query = SpeedQuery(settings, client)
    for minute, n in truth.page_views_1m.items():
        assert query.value("page_views", window="1m", buckets=[minute]) == n
    stored_minutes = {int(k.split(b":")[-1]) for k in client.scan_iter(match=f"{prefix}:v:page_views:1m:*")}
    assert stored_minutes == set(truth.page_views_1m)
    for hour, amount in truth.revenue_1h.items():
        assert query.value("revenue", window="1h", buckets=[hour]) == pytest.approx(amount, rel=1e-9)
    for user, n in truth.user_events.items():
        assert query.value("user_events", [user]) == n
    for (user, kind), n in truth.user_events_by_type.items():
        assert query.value("user_events_by_type", [user, kind]) == n
    for user, value in truth.user_value.items():
        assert query.value("user_lifetime_value", [user]) == pytest.approx(value, rel=1e-9)
    # out-of-order events reach max and min after greater (smaller) values: kept, not overwritten
    for user, ts in truth.last_activity.items():
        assert query.value("user_last_activity", [user]) == ts
    for session, (first, last) in truth.session_span.items():
        assert (query.value("session_first_ts", [session]), query.value("session_last_ts", [session])) == (
            first,
            last,
        )
    for minute, counts in truth.views_1m.items():
        top = query.top("trending_products_views", window="1m", buckets=[minute], k=1000)
        assert dict(top) == {p: float(n) for p, n in counts.items()}
    for hour, units in truth.units_1h.items():
        top = query.top("trending_products_purchases", window="1h", buckets=[hour], k=1000)
        assert dict(top) == {p: float(n) for p, n in units.items()}
    for user, products in truth.recent.items():
        newest = sorted(products.items(), key=lambda p: (-p[1], [-ord(c) for c in p[0]]))[:20]
        assert query.recent("recently_viewed", [user]) == [p for p, _ in newest]
    for product, others in truth.co_viewed().items():
        related = query.related("co_viewed_products", product, k=1000)
        assert dict(related) == {p: float(n) for p, n in others.items()}
    for hour, users in truth.active_1h.items():
        # HyperLogLog: within 2%, but never finer than one element (2% of 42 users is 0.84).
        estimate = query.value("active_users", window="1h", buckets=[hour])
        assert estimate == pytest.approx(len(users), rel=0.02, abs=1)
    stats = client.hgetall(f"{prefix}:views:stats")
    assert int(stats[b"late_events"]) == truth.late_events


def truth_for(shards: dict[str, list[StreamRecord]], emitted: list[Emitted]) -> Truth:
    by_line = {}
    for e in emitted:
        by_line.setdefault(e.line, e)
    return ground_truth(
        {s: [(r.arrival_ts, by_line[r.data]) for r in records] for s, records in shards.items()}
    )


def test_views_equal_an_independent_ground_truth_and_a_replay_changes_nothing(engines: Settings) -> None:
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(6000)
    shards = in_memory_records(emitted)
    truth = truth_for(shards, emitted)
    assert truth.late_events > 10  # the data exercises lateness
    processor = ViewsProcessor(settings, client, SpeedMetrics())
    run_in_memory(processor, shards)
    assert_views_equal_truth(settings, client, truth)

    before = snapshot(client, settings.speed_key_prefix)
    stats = client.hgetall(f"{settings.speed_key_prefix}:views:stats")
    # a restart replays from TRIM_HORIZON with other batch boundaries: nothing changes
    run_in_memory(ViewsProcessor(settings, client, SpeedMetrics()), shards, batch=97)
    assert snapshot(client, settings.speed_key_prefix) == before
    assert client.hgetall(f"{settings.speed_key_prefix}:views:stats") == stats
    assert int(stats[b"duplicates"]) > 50
    assert int(stats[b"invalid"]) > 10


def test_views_do_not_depend_on_batch_or_chunk_boundaries(
    engines: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the batches and the chunks they are applied in (each chunk read ahead of the one
    before it is applied), the views are the same, stagger windows and their starts included."""
    emitted = generated(2500, seed=5, late_rate=0.05, out_of_order_rate=0.1)
    shards = in_memory_records(emitted)
    dumps = []
    bounds = apply.chunk_bounds
    for batch, chunks in ((1, None), (13, None), (500, None), (1200, None), (1200, (20, 5, 10))):
        if chunks:
            monkeypatch.setattr(apply, "chunk_bounds", lambda n, c=chunks: bounds(n, *c))
        settings = speed_settings(engines)
        client = redis_lib.Redis.from_url(settings.redis_url)
        run_in_memory(ViewsProcessor(settings, client, SpeedMetrics()), shards, batch=batch)
        dumps.append(snapshot(client, settings.speed_key_prefix, "v", "stagger"))
    assert all(dump == dumps[0] for dump in dumps[1:])


def test_a_chunk_refused_mid_batch_keeps_the_chunks_before_it_and_the_retry_applies_the_rest(
    engines: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other attempt's dedupe lookups forget the resends past its first 200 records, as if
    another shard's writer had added them after the lookup: the script refuses the chunk holding
    one (a later chunk: chunks are 100 here) and every chunk after it, the processor rebuilds from
    the state the applied chunks left, and the views still equal the truth."""
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(4000, seed=8)
    shards = in_memory_records(emitted)
    metrics = SpeedMetrics()
    processor = ViewsProcessor(settings, client, metrics)
    seen_already, chunks, hidden = processor.seen_already, [], []
    apply_batch = processor._apply

    def count_batches(shard_id: str, records: list[StreamRecord]) -> bool:
        chunks.append(0)  # per attempt: chunks looked up so far
        return apply_batch(shard_id, records)

    def forgetful(parsed: list[Any], lookups: Any) -> Any:
        found = seen_already(parsed, lookups)
        chunks[-1] += 1
        forget = len(chunks) % 2 == 0 and chunks[-1] > 2  # from the third chunk (record 200) on

        def replies(raw: list[Any]) -> set[str]:
            seen = found(raw)
            if forget:
                hidden.extend(seen)
                return set()
            return seen

        return replies

    monkeypatch.setattr(processor, "_apply", count_batches)
    monkeypatch.setattr(processor, "seen_already", forgetful)
    bounds = apply.chunk_bounds
    monkeypatch.setattr(apply, "chunk_bounds", lambda n: bounds(n, 100, 20, 100))  # 100s, then 20
    run_in_memory(processor, shards, batch=600)
    assert hidden
    assert metrics.conflicts.labels("views")._value.get() >= 1
    assert_views_equal_truth(settings, client, truth_for(shards, emitted))


def test_a_zombie_with_a_stale_state_cannot_apply_a_record_twice(engines: Settings) -> None:
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(3000, seed=3)
    shards = in_memory_records(emitted)
    metrics = SpeedMetrics()
    zombie = ViewsProcessor(settings, client, metrics)
    heir = ViewsProcessor(settings, client, metrics)
    for shard, records in shards.items():
        third = len(records) // 3
        ctx = BatchContext("views", zombie.stream, shard, "w", 1, 0, 1)
        zombie.process_records(records[:third], ctx)  # the zombie caches the shard's state
        heir.process_records(records[: 2 * third], ctx)  # the heir re-reads the first third too
        zombie.process_records(records[third : 2 * third + 50], ctx)  # stale: must not double-apply
        heir.process_records(records[2 * third :], ctx)
    # per shard: the zombie's stale state conflicts once, then the heir's (the zombie moved it)
    assert metrics.conflicts.labels("views")._value.get() == 2 * len(shards)
    assert_views_equal_truth(settings, client, truth_for(shards, emitted))


def run_pipelined(processor: ViewsProcessor, shards: dict[str, list[StreamRecord]], batch: int) -> None:
    """As the runtime delivers a backlog: each batch submitted behind the ones in flight, a flush
    now and then (the next batch was not read yet), a finish at the shard's end."""
    for shard, records in shards.items():
        ctx = BatchContext("views", processor.stream, shard, "test-worker", 1, 0, 1)
        durable = 0
        starts = range(0, len(records), batch)
        for number, start in enumerate(starts):
            durable += processor.submit_records(records[start : start + batch], ctx)
            if number % 7 == 3:
                processor.flush()
        assert durable < len(starts)  # the last batch at least was still in flight
        processor.finish()


def test_pipelined_batches_make_the_same_views(engines: Settings) -> None:
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(6000, seed=17)
    shards = in_memory_records(emitted)
    processor = ViewsProcessor(settings, client, SpeedMetrics())
    # 60 records a batch: more batches per shard than a flow's builder lives (BUILDER_BATCHES)
    assert all(len(r) // 60 > 2 * apply.BUILDER_BATCHES for r in shards.values())
    run_pipelined(processor, shards, batch=60)
    assert_views_equal_truth(settings, client, truth_for(shards, emitted))


def test_a_pipelined_zombie_fails_its_flow_and_its_batches_apply_once(engines: Settings) -> None:
    """Another writer moves the state under batches in flight: the flow raises, and delivering
    its batches again the usual way (as the runtime does) applies each record once."""
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(3000, seed=5)
    shards = in_memory_records(emitted)
    metrics = SpeedMetrics()
    zombie = ViewsProcessor(settings, client, metrics)
    heir = ViewsProcessor(settings, client, metrics)
    failures = 0
    for shard, records in shards.items():
        third = len(records) // 3
        ctx = BatchContext("views", zombie.stream, shard, "w", 1, 0, 1)
        submitted = [records[:100], records[100:third]]
        for batch in submitted:
            zombie.submit_records(batch, ctx)  # in flight: the last chunk held back
        heir.process_records(records[: 2 * third], ctx)  # applies the same records and more
        late = records[third : 2 * third + 50]
        try:
            zombie.submit_records(late, ctx)
            zombie.finish()
        except apply.Refused:
            failures += 1
            for batch in [*submitted, late]:
                zombie.process_records(batch, ctx)  # the runtime's usual path: replays are no-ops
        heir.process_records(records[2 * third :], ctx)
    assert failures == len(shards)
    assert_views_equal_truth(settings, client, truth_for(shards, emitted))


def test_a_redis_that_lost_its_scripts_gets_them_again_and_loses_no_event(engines: Settings) -> None:
    """Redis restarted without its script cache (or SCRIPT FLUSH): a batch applied the usual way
    loads the script again and applies; a pipelined flow raises, and its batches delivered again
    (as the runtime does) apply once."""
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(3000, seed=23)
    shards = in_memory_records(emitted)
    metrics = SpeedMetrics()
    processor = ViewsProcessor(settings, client, metrics)
    lost = 0
    for shard, records in shards.items():
        third = len(records) // 3
        ctx = BatchContext("views", processor.stream, shard, "w", 1, 0, 1)
        processor.process_records(records[:third], ctx)
        client.script_flush()
        processor.process_records(records[third : 2 * third], ctx)
        client.script_flush()
        rest = [records[2 * third : -100], records[-100:]]
        try:
            for batch in rest:
                processor.submit_records(batch, ctx)
            processor.finish()
        except redis_lib.exceptions.NoScriptError:
            lost += 1
            for batch in rest:
                processor.process_records(batch, ctx)
    assert lost == len(shards)
    assert metrics.conflicts.labels("views")._value.get() == len(shards)  # one attempt each
    assert_views_equal_truth(settings, client, truth_for(shards, emitted))


def test_every_view_key_keeps_a_ttl_even_when_deleted_and_recreated_under_a_processor(
    engines: Settings,
) -> None:
    """Expiries are sent "only if created" for keys whose TTL is set already (window keys, sliding
    keys refreshed recently): a key deleted behind the processor's back must still get its TTL back."""
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(3000, seed=13, late_rate=0.0, malformed_rate=0.0)
    shards = in_memory_records(emitted)
    processor = ViewsProcessor(settings, client, SpeedMetrics())
    halves = {shard: (r[: len(r) // 2], r[len(r) // 2 :]) for shard, r in shards.items()}
    run_in_memory(processor, {shard: first for shard, (first, _) in halves.items()})
    assert processor.refreshed  # sliding keys this processor refreshed: next time "only if created"
    views = list(client.scan_iter(match=f"{settings.speed_key_prefix}:v:*", count=1000))
    client.delete(*views)  # e.g. an operator clearing the views, or the serving layer's retention
    run_in_memory(processor, {shard: second for shard, (_, second) in halves.items()})

    keys = list(client.scan_iter(match=f"{settings.speed_key_prefix}:v:*", count=1000))
    assert any(b":lifetime:" in k for k in keys)
    assert any(b":1m:" in k for k in keys)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    no_ttl = [k for k, ttl in zip(keys, pipe.execute(), strict=True) if ttl < 0]
    assert no_ttl == []


def test_sums_min_and_max_write_their_expiry_with_the_value(engines: Settings) -> None:
    """Sums, min and max put a due expiry in their SET (EXAT/EX) when they know it before writing
    (a sum or min creating its key, a refresh asked for), and call EXPIRE only otherwise: a max that
    created its key, a kept value asked to refresh. Each key ends with the TTL it had before."""
    import ormsgpack

    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    sha = client.script_load(apply.APPLY_LUA)
    prefix = settings.speed_key_prefix
    now = int(datetime.now(UTC).timestamp())
    window_end = now + 5000

    def run(ops: list[list[Any]]) -> None:
        hwm = (client.hget(f"{prefix}:state", "hwm") or b"").decode()
        payload = {
            "state": f"{prefix}:state",
            "expect": hwm,
            "hwm": str(int(hwm or 0) + 1),
            "maxts": "0",
            "now": now,
            "seen": [],
            "stats": f"{prefix}:stats",
            "counts": {},
            "ops": apply.encode_ops(ops),
        }
        assert client.evalsha(sha, 0, ormsgpack.packb(payload)) == [1]

    # created by the op: the window key's absolute expiry, the sliding key's TTL
    run(
        [
            ["max", f"{prefix}:max:w", [window_end], "5", 5],
            ["min", f"{prefix}:min:w", [window_end], "5", 5],
            ["incrf", f"{prefix}:sum:w", [window_end], "2.5"],
            ["max", f"{prefix}:max:s", [-1000], "5", 5],
        ]
    )
    for name in ("max:w", "min:w", "sum:w"):
        assert window_end - now - 2 <= client.ttl(f"{prefix}:{name}") <= window_end - now, name
    assert 998 <= client.ttl(f"{prefix}:max:s") <= 1000

    for name in ("max:s", "min:s", "max:k", "min:k", "max:o", "sum:o"):
        client.set(f"{prefix}:{name}", "7", ex=50)
    client.config_resetstat()
    run(
        [
            ["max", f"{prefix}:max:s", -1000, "9", 9],  # written, refresh asked: in the SET
            ["min", f"{prefix}:min:s", -1000, "9", 9],  # kept, refresh asked: EXPIRE
            ["max", f"{prefix}:max:k", -1000, "3", 3],  # smaller, refresh asked: put back, new TTL kept
            ["min", f"{prefix}:min:k", [-1000], "9", 9],  # kept: the key's TTL stays
            ["max", f"{prefix}:max:o", [-1000], "9", 9],  # written, not created: the TTL stays
            ["incrf", f"{prefix}:sum:o", -1000, "1"],  # refresh asked: in the SET
            ["incrf", f"{prefix}:sum:w", [window_end], "1.25"],  # the window's expiry stays
        ]
    )
    stats = client.info("commandstats")
    assert stats.get("cmdstat_expire", {}).get("calls") == 1  # the kept min's refresh only
    assert "cmdstat_expireat" not in stats
    names = ("max:s", "min:s", "max:k", "min:k", "max:o", "sum:o", "sum:w")
    values = {name: client.get(f"{prefix}:{name}") for name in names}
    ttls = {name: client.ttl(f"{prefix}:{name}") for name in names}
    assert values == {
        "max:s": b"9",
        "min:s": b"7",
        "max:k": b"7",
        "min:k": b"7",
        "max:o": b"9",
        "sum:o": b"8",
        "sum:w": b"3.75",
    }
    assert all(998 <= ttls[name] <= 1000 for name in ("max:s", "min:s", "max:k", "sum:o")), ttls
    assert ttls["min:k"] <= 50
    assert ttls["max:o"] <= 50
    assert window_end - now - 2 <= ttls["sum:w"] <= window_end - now
