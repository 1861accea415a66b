"""Stagger windows in the speed layer on real Redis: equal to the batch layer's reading for events
in order, unchanged by a replayed batch or other batch boundaries, and out-of-order events handled
as docs/metrics.md says (joined when a window covers them, late ones left to the batch layer)."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis as redis_lib

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.consumer.processor import BatchContext
from lambdalake.metrics.evaluate import MICROS, assign_stagger, micros
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from speed_layer.metrics import SpeedMetrics
from speed_layer.query import SpeedQuery
from speed_layer.views import ViewsProcessor
from tests.integration.test_speed_views import snapshot, speed_settings

pytestmark = pytest.mark.integration

METRIC = "user_page_views_stagger"
SHARD = "shardId-000000000000"
T0 = (time.time() // 3600 - 2) * 3600  # two hours ago, on the hour: every window is within retention


def _page_view(user: str, ts: float, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "page_view",
        "user_id": user,
        "session_id": f"s-{user}",
        "ts": datetime.fromtimestamp(ts, UTC).isoformat(),
        "properties": {"path": "/"},
        "context": {},
    }


def _records(events: list[dict[str, Any]], first: int = 0) -> list[StreamRecord]:
    return [
        StreamRecord(SHARD, str(49_000_000 + first + i), str(e["user_id"]), orjson.dumps(e), time.time())
        for i, e in enumerate(events)
    ]


def _run(processor: ViewsProcessor, records: list[StreamRecord], batch: int) -> None:
    ctx = BatchContext("views", processor.stream, SHARD, "w", 1, 0, 1)
    for start in range(0, len(records), batch):
        processor.process_records(records[start : start + batch], ctx)


def _batch_reading(events: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per user, (window start, page views): each user's events in event-time order, assigned by
    ``assign_stagger`` — the batch layer's reading (the Spark job is tested equal to it)."""
    times: dict[str, list[int]] = defaultdict(list)
    for event in events:
        times[event["user_id"]].append(micros(datetime.fromisoformat(event["ts"]).timestamp()))
    out = {}
    for user, ts in times.items():
        counts: dict[int, int] = defaultdict(int)
        for start in assign_stagger(sorted(ts), 60 * MICROS):
            counts[start] += 1
        out[user] = [(start / MICROS, float(n)) for start, n in sorted(counts.items())]
    return out


def _speed_reading(query: SpeedQuery, users: list[str]) -> dict[str, list[tuple[float, float]]]:
    return {user: query.stagger(METRIC, [user], T0 - 3600, T0 + 4 * 3600) for user in users}


def _in_order_events() -> list[dict[str, Any]]:
    """Generated page views (many users, bursts and pauses), sorted by event time, with resends."""
    config = GeneratorConfig(events=3000, seed=21, start=datetime.fromtimestamp(T0, UTC), events_per_s=1.0)
    events = []
    for emitted in ClickstreamGenerator(config).emitted():
        if emitted.kind != "malformed":
            event = orjson.loads(emitted.line)
            if event["event_type"] == "page_view" and event.get("user_id"):
                events.append(event)
    unique = {e["event_id"]: e for e in events}
    events = sorted(unique.values(), key=lambda e: (e["ts"], e["event_id"]))
    return events + events[::17]  # client resends: deduplicated by event_id


def test_in_order_events_give_the_batch_layers_windows_and_a_replay_changes_nothing(
    engines: Settings,
) -> None:
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    events = _in_order_events()
    first = {e["event_id"]: e for e in events}
    expected = _batch_reading(list(first.values()))
    assert sum(len(w) for w in expected.values()) > 100  # the data opens many windows
    assert any(n > 1 for w in expected.values() for _, n in w)  # and some hold several events
    records = _records(events)
    _run(ViewsProcessor(settings, client, SpeedMetrics()), records, batch=100)
    query = SpeedQuery(settings, client)
    assert _speed_reading(query, sorted(expected)) == expected
    stats = client.hgetall(f"{settings.speed_key_prefix}:views:stats")
    assert b"late_events:stagger_1m" not in stats

    before = snapshot(client, settings.speed_key_prefix)
    starts = {
        k: client.zrange(k, 0, -1, withscores=True)
        for k in client.scan_iter(f"{settings.speed_key_prefix}:stagger:*")
    }
    assert starts
    # the same records again, in other batches (a restart from TRIM_HORIZON): nothing changes
    _run(ViewsProcessor(settings, client, SpeedMetrics()), records, batch=37)
    assert snapshot(client, settings.speed_key_prefix) == before
    assert {k: client.zrange(k, 0, -1, withscores=True) for k in starts} == starts
    # the same events under new sequence numbers (a client resending a whole batch): deduplicated
    _run(
        ViewsProcessor(settings, client, SpeedMetrics()), _records(events[:300], first=len(events)), batch=50
    )
    assert _speed_reading(query, sorted(expected)) == expected


def test_windows_do_not_depend_on_batch_boundaries(engines: Settings) -> None:
    events = _in_order_events()[:1500]
    records = _records(events)
    dumps = []
    for batch in (1, 7, 1500):
        settings = speed_settings(engines)
        client = redis_lib.Redis.from_url(settings.redis_url)
        _run(ViewsProcessor(settings, client, SpeedMetrics()), records, batch=batch)
        dumps.append(
            {
                k[len(settings.speed_key_prefix) :]: client.dump(k)
                for k in client.scan_iter(f"{settings.speed_key_prefix}:*stagger*")
            }
        )
    assert dumps[0]
    assert dumps[0] == dumps[1] == dumps[2]


def test_out_of_order_events_within_and_across_windows(engines: Settings) -> None:
    # lateness 60 s: the shard's watermark is its newest event time minus 60 s
    settings = speed_settings(engines, allowed_lateness_s=60, speed_validate_events=False)
    client = redis_lib.Redis.from_url(settings.redis_url)
    query = SpeedQuery(settings, client)
    arrival = [
        ("u1", 0),  # opens [0, 60)
        ("u1", 70),  # opens [70, 130)
        ("u1", 30),  # out of order, covered by [0, 60): joins it, as in the batch layer
        ("u1", 100),  # in [70, 130)
        ("u1", 65),  # out of order, covered by no window: opens [65, 125), overlapping [70, 130)
        ("u1", 290),  # opens [290, 350)
        ("u2", 420),  # another user on the shard moves the watermark to 360: [290, 350) closes
        ("u1", 275),  # its own window would end by 335 <= 360: late, left to the batch layer
        ("u1", 320),  # covered by the closed [290, 350), its own [320, 380) is open: opens it
        ("u1", 330),  # joins [320, 380)
    ]
    events = [_page_view(user, T0 + offset) for user, offset in arrival]
    _run(ViewsProcessor(settings, client, SpeedMetrics()), _records(events), batch=3)
    got = query.stagger(METRIC, ["u1"], T0, T0 + 3600)
    assert got == [(T0, 2.0), (T0 + 65, 1.0), (T0 + 70, 2.0), (T0 + 290, 1.0), (T0 + 320, 2.0)]
    # the batch layer, in event-time order: 0 30 | 65 70 100 | 275 290 320 330
    batch = _batch_reading(events)["u1"]
    assert batch == [(T0, 2.0), (T0 + 65, 3.0), (T0 + 275, 4.0)]
    # the totals differ only by the late event
    assert sum(n for _, n in got) == sum(n for _, n in batch) - 1
    stats = client.hgetall(f"{settings.speed_key_prefix}:views:stats")
    assert int(stats[b"late_events:stagger_1m"]) == 1
    assert query.stagger(METRIC, ["u1"], T0 + 66, T0 + 290) == [(T0 + 70, 2.0)]  # starts in [start, end)
    assert query.stagger(METRIC, ["u2"], T0, T0 + 3600) == [(T0 + 420, 1.0)]
    with pytest.raises(ValueError, match="use stagger"):
        query.value(METRIC, ["u1"])
    with pytest.raises(ValueError, match="no stagger window"):
        query.stagger("user_page_views", ["u1"], T0, T0 + 60)
