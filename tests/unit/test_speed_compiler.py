"""The speed layer's compiled reading of the catalogue equals the evaluator's, and windows close."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.metrics.catalogue import load_catalogue, parse_catalogue, parse_duration
from lambdalake.metrics.evaluate import contributions, event_time_s
from lambdalake.stream.bus import StreamRecord
from speed_layer.apply import chunk_bounds, decode_ops, encode_ops, pack_commands
from speed_layer.compiler import MAX_ARGS, ViewOps, compile_reader, compile_views
from speed_layer.keys import SCOPE_TTL_S, SpeedKeys, retention_s
from speed_layer.records import parse_records

RETENTION = {"1m": "2d", "1h": "15d", "1d": "400d", "lifetime": "400d"}
EXTRA = """
metrics:
  - name: big_books_items
    description: Exploded purchase items of books with quantity over 1, by category.
    filter:
      event_type: purchase
      where:
        - {field: item.category, op: in, value: [books, toys]}
        - {field: item.quantity, op: ">", value: 1}
    explode: properties.items
    by: [item.category]
    aggregate: sum
    field: item.price
    windows: [5m]
  - name: mobile_last_amount
    description: Latest purchase amount per country, mobile only.
    filter:
      where: [{field: context.device, op: "==", value: mobile}, {field: properties.amount, op: exists}]
    by: [context.country]
    aggregate: last
    field: properties.amount
"""


def _events(n: int = 3000) -> list[dict]:
    out = []
    for emitted in ClickstreamGenerator(GeneratorConfig(events=n, seed=7, fraud_rate=0.05)).emitted():
        try:
            event = orjson.loads(emitted.line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def test_compiled_readers_equal_the_evaluator_for_every_metric() -> None:
    catalogue = parse_catalogue([("builtin.yaml", _builtin_text()), ("extra.yaml", EXTRA)])
    events = _events()
    checked = 0
    for metric in catalogue.aggregated():
        read = compile_reader(metric)
        for event in events:
            try:
                ts = event_time_s(event)
            except (KeyError, ValueError, TypeError):
                continue
            expected = [(c.key, c.value, c.weight) for c in contributions(metric, event)]
            assert read(event, ts) == expected, (metric.name, event)
            checked += len(expected)
    assert checked > 10_000


def _builtin_text() -> str:
    from importlib import resources

    return (resources.files("lambdalake.metrics") / "builtin.yaml").read_text()


def _event(event_type: str, ts: str, **properties: object) -> dict:
    return {
        "event_id": "6f1f8f5e-8d2a-4a53-9c55-2f0e5f0b7a10",
        "event_type": event_type,
        "user_id": "u1",
        "session_id": "s1",
        "ts": ts,
        "properties": properties,
        "context": {},
    }


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_an_event_for_a_closed_window_is_late_there_but_counts_in_open_windows() -> None:
    views = compile_views(load_catalogue(), SpeedKeys("t"), RETENTION)
    (page_views,) = [c for c in views.metrics if c.name == "page_views"]
    event = _event("page_view", "2026-01-01T10:00:30Z", path="/")
    ops = ViewOps()
    # watermark past the end of 10:00-10:01 but inside the hour and the day
    late = ops.add(page_views, event, _ts("2026-01-01T10:00:30+00:00"), _ts("2026-01-01T10:01:00+00:00"))
    assert late == {"1m"}
    hour = int(_ts("2026-01-01T10:00:00+00:00"))
    day = int(_ts("2026-01-01T00:00:00+00:00"))
    assert ops.counts == {f"t:v:page_views:1h:{hour}": 1, f"t:v:page_views:1d:{day}": 1}
    assert ops.expiry[f"t:v:page_views:1h:{hour}"] == hour + 3600 + 15 * 86400
    # a watermark a second earlier leaves the minute open
    ops = ViewOps()
    assert (
        ops.add(page_views, event, _ts("2026-01-01T10:00:30+00:00"), _ts("2026-01-01T10:00:59+00:00"))
        == set()
    )
    assert len(ops.counts) == 3


def test_a_batch_is_aggregated_per_key_and_serialised_for_the_script() -> None:
    views = compile_views(load_catalogue(), SpeedKeys("t"), RETENTION)
    ops = ViewOps()
    for i, product in enumerate(["P1", "P2", "P1", "P3", "P1"]):
        event = _event("product_view", f"2026-01-01T10:00:0{i}Z", product_id=product, category="books")
        event["session_id"] = "s1"
        for cm in views.for_type("product_view"):
            assert ops.add(cm, event, _ts(event["ts"].replace("Z", "+00:00")), 0.0) == set()
    minute = int(_ts("2026-01-01T10:00:00+00:00"))
    assert ops.ranks[f"t:v:trending_products_views:1m:{minute}"] == {"P1": 3.0, "P2": 1.0, "P3": 1.0}
    assert ops.ranks[f"t:v:trending_products_views_by_category:1m:{minute}:books"]["P1"] == 3.0
    # recently viewed keeps each product once, at its newest time
    _, recent = ops.recents["t:v:recently_viewed:lifetime:u1"]
    assert recent == {
        "P1": _ts("2026-01-01T10:00:04+00:00"),
        "P2": _ts("2026-01-01T10:00:01+00:00"),
        "P3": _ts("2026-01-01T10:00:03+00:00"),
    }
    payload = decode_ops(ops.payload())
    kinds = {op[0] for op in payload}
    assert {"incr", "zincr", "lastn", "cooc", "pfadd", "min", "max"} <= kinds
    (cooc,) = [op for op in payload if op[0] == "cooc"]
    assert cooc[1] == "t:scope:co_viewed_products:lifetime:s1"
    assert cooc[2] == -SCOPE_TTL_S
    assert cooc[3] == "t:v:co_viewed_products:lifetime:"
    assert cooc[6:] == ["P1", "P2", "P1", "P3", "P1"]
    (count,) = [op for op in payload if op[1] == f"t:v:product_views:1m:{minute}"]
    # a window key's expiry never changes: set only by the op that creates the key
    assert count == ["incr", f"t:v:product_views:1m:{minute}", [minute + 60 + 2 * 86400], "5", 5]


def test_sliding_ttls_are_refreshed_once_per_tenth_of_their_length_and_window_ttls_only_on_creation() -> None:
    views = compile_views(load_catalogue(), SpeedKeys("t"), RETENTION)
    (user_events,) = [c for c in views.metrics if c.name == "user_events"]
    (page_views,) = [c for c in views.metrics if c.name == "page_views"]
    event = _event("page_view", "2026-01-01T10:00:00Z", path="/")
    ts = _ts("2026-01-01T10:00:00+00:00")
    lifetime_key = "t:v:user_events:lifetime:u1"

    def build(refreshed: dict[str, float], now: float) -> tuple[dict[str, Any], list[str]]:
        ops = ViewOps()
        ops.add(user_events, event, ts, 0.0)
        ops.add(page_views, event, ts, 0.0)
        return {op[1]: op[2] for op in decode_ops(ops.payload(refreshed, now))}, ops.refreshing

    ttl = parse_duration(RETENTION["lifetime"])
    first, refreshing = build({}, 1000.0)
    assert first[lifetime_key] == -ttl  # never refreshed by this processor: EXPIRE whatever happens
    assert refreshing == [lifetime_key]
    assert all(e == [e[0]] and e[0] > 0 for k, e in first.items() if k != lifetime_key)  # windows
    soon, refreshing = build({lifetime_key: 1000.0}, 1000.0 + min(ttl / 10, 86400) - 1)
    assert soon[lifetime_key] == [-ttl]  # refreshed recently: only if this op creates the key
    assert refreshing == []
    later, refreshing = build({lifetime_key: 1000.0}, 1000.0 + min(ttl / 10, 86400) + 1)
    assert later[lifetime_key] == -ttl
    assert refreshing == [lifetime_key]


def test_a_batch_is_cut_into_chunks_starting_and_ending_with_a_short_one() -> None:
    assert chunk_bounds(2000) == [(0, 100), (100, 600), (600, 1100), (1100, 1600), (1600, 1950), (1950, 2000)]
    assert chunk_bounds(300, 500, 50, 100) == [(0, 100), (100, 250), (250, 300)]
    assert chunk_bounds(101, 500, 50, 100) == [(0, 51), (51, 101)]
    assert chunk_bounds(100, 500, 50, 100) == [(0, 100)]  # short already: one call
    assert chunk_bounds(700, 500, 50, 100) == [(0, 100), (100, 600), (600, 700)]
    assert chunk_bounds(1, 500, 50, 100) == [(0, 1)]
    for n in range(1, 1300, 7):  # every record in exactly one chunk, in order
        bounds = chunk_bounds(n, 500, 50, 100)
        assert [start for start, _ in bounds] == [0] + [end for _, end in bounds[:-1]]
        assert bounds[-1][1] == n
        assert all(start < end for start, end in bounds)


def test_lookups_are_packed_as_redis_py_packs_them() -> None:
    from redis.connection import Connection

    commands = [
        (
            "SMISMEMBER",
            "ll:seen:views:1764720000",
            *(f"{i:08d}-0000-4000-8000-000000000000" for i in range(1200)),
        ),
        ("ZRANGEBYSCORE", "ll:starts:ü:42", "(1764720000000000", "+inf", "WITHSCORES"),
        ("HGET", b"raw\r\nkey", "ltv"),
        ("INCRBY", "n", 7),
        ("SET", "x", 0.25),
    ]
    assert pack_commands(commands) == b"".join(Connection().pack_commands(commands))
    assert pack_commands([]) == b""


def test_the_flat_wire_form_round_trips_every_op_shape() -> None:
    ops = [
        ["incr", "k1", [1700000000], "5", 5],
        ["incr", "k0", [1700000000], "1", 1],  # same kind and expiry: the same group
        ["incr", "k6", 1700000000, "1", 1],  # not "only if created": a group of its own
        ["zincr", "k2", -86400, "1", "P1", "2", "P2"],
        ["cooc", "k3", -3600, "prefix:", "EXPIREAT", "1700000100", "P1", "P2"],
        ["xadd", "k4", 0, 1000, "alert_id", "a1", "alert", "{}"],
        ["hset", "k5", [-60]],  # no arguments at all
    ]
    flat = encode_ops(ops)
    assert flat[:13] == ["incr", "EXPIREAT", "1700000000", True, 2, "k1", 2, "5", 5, "k0", 2, "1", 1]
    assert flat[13:18] == ["incr", "EXPIREAT", "1700000000", False, 1]
    assert decode_ops(flat) == ops
    # ViewOps writes the same form without building op lists first
    views = compile_views(load_catalogue(), SpeedKeys("t"), RETENTION)
    built = ViewOps()
    for event in _events(200):
        views.sink_for(event.get("event_type"))(built, event, event_time_s(event), 0.0, set())
    assert encode_ops(decode_ops(built.payload())) == built.payload()


def test_large_member_lists_are_split_under_luas_unpack_limit() -> None:
    views = compile_views(load_catalogue(), SpeedKeys("t"), RETENTION)
    (active,) = [c for c in views.metrics if c.name == "active_users"]
    ops = ViewOps()
    for i in range(2 * MAX_ARGS + 5):
        event = _event("page_view", "2026-01-01T10:00:00Z", path="/")
        event["user_id"] = f"u{i}"
        ops.add(active, event, _ts("2026-01-01T10:00:00+00:00"), 0.0)
    minute_ops = [op for op in decode_ops(ops.payload()) if op[1].startswith("t:v:active_users:1m:")]
    assert [len(op) - 3 for op in minute_ops] == [MAX_ARGS, MAX_ARGS, 5]


def test_retention_comes_from_the_metric_then_settings_then_a_floor() -> None:
    catalogue = load_catalogue()
    assert retention_s(catalogue["active_users"], "1m", RETENTION) == 2 * 86400
    assert retention_s(catalogue["recently_viewed"], "lifetime", RETENTION) == 30 * 86400
    assert retention_s(catalogue["page_views"], "1h", {}) == 100 * 3600
    assert retention_s(catalogue["page_views"], "1m", {}) == 2 * 86400
    extra = parse_catalogue([("extra.yaml", EXTRA)])
    assert retention_s(extra["big_books_items"], "5m", RETENTION) == 2 * 86400


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"event_id": "x"', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            b'{"event_id": "not-a-uuid", "event_type": "page_view", "user_id": "u", "ts": "2026-01-01T00:00:00Z"}',
            "event_id is not a UUID",
        ),
        (
            b'{"event_id": "6f1f8f5e-8d2a-4a53-9c55-2f0e5f0b7a10", "event_type": "page_view", "user_id": "u",'
            b' "ts": "2026-01-01T00:00:00"}',
            "ts is not an RFC 3339 time with an offset",
        ),
        (
            b'{"event_id": "6f1f8f5e-8d2a-4a53-9c55-2f0e5f0b7a10", "event_type": "page_view",'
            b' "ts": "2026-01-01T00:00:00Z"}',
            "user_id or anonymous_id is required",
        ),
        (
            b'{"event_id": "6f1f8f5e-8d2a-4a53-9c55-2f0e5f0b7a10", "event_type": "page_view", "user_id": "u",'
            b' "ts": "2026-01-01T00:00:00Z", "properties": "oops"}',
            "properties is not an object",
        ),
    ],
)
def test_unreadable_records_carry_a_reason(line: bytes, reason: str) -> None:
    (parsed,) = parse_records([StreamRecord("s", "1", "k", line, 0.0)])
    assert parsed.event is None
    assert parsed.reason == reason


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.250z", datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("2026-01-01T02:00:00+02:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T00:00:00.123456-05:30", datetime(2026, 1, 1, 5, 30, 0, 123456, tzinfo=UTC)),
        ("2026-13-01T00:00:00Z", None),  # the usual shape, not a date: the full checks say why
        ("2026-01-01 00:00:00", None),
    ],
)
def test_event_times_read_the_same_on_the_usual_path_and_the_full_checks(
    stamp: str, expected: datetime | None
) -> None:
    line = orjson.dumps({**_event("page_view", stamp), "context": {"ip": "x"}})
    (parsed,) = parse_records([StreamRecord("s", "7", "k", line, 0.0)])
    assert parsed.sequence == 7
    if expected is None:
        assert (parsed.event, parsed.reason) == (None, "ts is not an RFC 3339 time with an offset")
    else:
        assert parsed.reason == ""
        assert parsed.ts == expected.timestamp()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_type": 5}, "event_type is missing"),
        ({"context": ["a"]}, "context is not an object"),
        ({"event_id": 17}, "event_id is not a UUID"),
        ({"event_id": "6f1f8f5e-8d2a-4a53-9c55-2f0e5f0b7a10\n"}, "event_id is not a UUID"),
        ({"ts": 1767225600}, "ts is not an RFC 3339 time with an offset"),
    ],
)
def test_records_off_the_usual_path_are_rejected_with_the_full_checks_reason(
    change: dict[str, Any], reason: str
) -> None:
    line = orjson.dumps({**_event("page_view", "2026-01-01T00:00:00Z"), **change})
    (parsed,) = parse_records([StreamRecord("s", "1", "k", line, 0.0)])
    assert (parsed.event, parsed.reason) == (None, reason)


def test_full_contract_validation_is_optional() -> None:
    from lambdalake.contract import EventValidator

    line = orjson.dumps(_event("purchase", "2026-01-01T00:00:00Z", amount=-5, currency="usd"))
    (light,) = parse_records([StreamRecord("s", "1", "k", line, 0.0)])
    (full,) = parse_records([StreamRecord("s", "1", "k", line, 0.0)], EventValidator())
    assert light.event is not None
    assert full.event is None
    assert full.reason


SIMPLE = """
metrics:
  - name: last_amount_by_country_device
    description: Latest purchase amount per country and device, per minute and hour.
    filter: {event_type: purchase}
    by: [context.country, context.device]
    aggregate: last
    field: properties.amount
    windows: [1m, 1h]
  - name: first_seen_by_type
    description: Earliest event time per event type.
    by: [event_type]
    aggregate: min
    field: ts
    windows: [1m, 5m]
  - name: co_viewed_by_country
    description: Products viewed in the same session, per country, minute and hour.
    filter: {event_type: product_view}
    by: [context.country]
    aggregate: co_occurrence
    item: properties.product_id
    scope: session_id
    windows: [1m, 1h]
"""


def test_each_entrys_compiled_sink_equals_the_general_path_window_by_window() -> None:
    """The per-entry fast path (keys built once per window, cached bucket prefixes) writes exactly
    what reading the contributions and applying them window by window writes, late windows included."""
    catalogue = parse_catalogue(
        [("builtin.yaml", _builtin_text()), ("extra.yaml", EXTRA), ("s.yaml", SIMPLE)]
    )
    views = compile_views(catalogue, SpeedKeys("t"), RETENTION)
    events = _events()
    times = sorted(event_time_s(e) for e in events)
    watermark = times[len(times) // 2]  # closes the minutes (and some hours) of the earlier half
    fields = ("counts", "sums", "distinct", "mins", "maxs", "lasts", "ranks", "recents", "pairs", "expiry")
    fast_paths = 0
    closed_some: list[str] = []
    for cm in views.metrics:
        if cm.stagger is not None:
            continue  # one path only: ViewOps._stagger (tests/unit/test_stagger_windows.py)
        fast, general = ViewOps(), ViewOps()
        late_fast: list[set[str]] = []
        late_general: list[set[str]] = []
        for event in events:
            ts = event_time_s(event)
            late_fast.append(fast.add(cm, event, ts, watermark))
            late = set()
            contributions = cm.read(event, ts)
            if contributions:
                general._windows(cm, contributions, event, ts, watermark, late)
            late_general.append(late)
        assert late_fast == late_general, cm.name
        for name in fields:
            assert getattr(fast, name) == getattr(general, name), (cm.name, name)
        assert fast.payload() == general.payload(), cm.name
        assert fast.expiry or fast.pairs, cm.name  # the generated events feed every entry
        fast_paths += cm.sink.__name__.startswith("sink_")  # type: ignore[union-attr]
        if any(late_fast):
            closed_some.append(cm.name)
    assert "co_viewed_by_country" in closed_some, "the watermark closes some windows"
    assert fast_paths >= 15
    generated = {cm.name for cm in views.metrics if cm.sink.__name__.startswith("sink_")}  # type: ignore[union-attr]
    assert {"co_viewed_products", "co_viewed_by_country"} <= generated


def test_each_event_types_generated_sink_equals_its_entries_general_paths() -> None:
    """The one generated function per event type (every common entry inlined, the others called)
    writes what each of the type's entries writes through the general path, late windows included;
    events of a type no entry names take the any-type function."""
    catalogue = parse_catalogue(
        [("builtin.yaml", _builtin_text()), ("extra.yaml", EXTRA), ("s.yaml", SIMPLE)]
    )
    views = compile_views(catalogue, SpeedKeys("t"), RETENTION)
    events = _events()
    events += [{**events[0], "event_type": "no_entry_names_this"}, {**events[1], "event_type": 7}]
    times = sorted(event_time_s(e) for e in events)
    watermark = times[len(times) // 2]
    fields = ("counts", "sums", "distinct", "mins", "maxs", "lasts", "ranks", "recents", "pairs", "expiry")
    fast, general = ViewOps(), ViewOps()
    types_seen = set()
    for event in events:
        ts = event_time_s(event)
        late_fast: set[str] = set()
        views.sink_for(event.get("event_type"))(fast, event, ts, watermark, late_fast)
        late_general: set[str] = set()
        for cm in views.for_type(event.get("event_type")):
            if cm.stagger is not None:
                cm.sink(general, event, ts, watermark, late_general)  # type: ignore[misc]
                continue
            contributions = cm.read(event, ts)
            if contributions:
                general._windows(cm, contributions, event, ts, watermark, late_general)
        assert late_fast == late_general, event
        types_seen.add(event.get("event_type"))
    for name in fields:
        assert getattr(fast, name) == getattr(general, name), name
    assert fast.payload() == general.payload()
    assert fast.opened == general.opened
    assert fast.opened  # stagger windows were opened (through the called, not inlined, path)
    assert {"page_view", "product_view", "purchase", "no_entry_names_this", 7} <= types_seen
    assert "counts.get(k)" in views.sink_for("page_view").source  # type: ignore[attr-defined]
