"""Stagger windows: the catalogue's rules, the one assignment function both layers use, and the
speed compiler's reading of it (arrival order, a watermark, state carried between batches)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from lambdalake.metrics.catalogue import CatalogueError, load_catalogue, parse_catalogue
from lambdalake.metrics.evaluate import MICROS, assign_stagger, contributions, micros, stagger_window
from speed_layer.apply import decode_ops
from speed_layer.compiler import ViewOps, compile_views
from speed_layer.keys import SpeedKeys, format_start, retention_s

S = MICROS  # one second in µs
RETENTION = {"1m": "2d", "1h": "15d", "1d": "400d", "lifetime": "400d"}


# --- the assignment ---------------------------------------------------------------------------------
def test_in_order_events_open_a_window_when_the_open_one_no_longer_covers_them() -> None:
    times = [0, 10 * S, 59 * S + 999_999, 60 * S, 61 * S, 200 * S, 259 * S, 260 * S]
    assert assign_stagger(times, 60 * S) == [0, 0, 0, 60 * S, 60 * S, 200 * S, 200 * S, 260 * S]


def test_events_at_the_same_time_share_a_window() -> None:
    assert assign_stagger([5 * S, 5 * S, 5 * S, 65 * S, 65 * S], 60 * S) == [5 * S] * 3 + [65 * S] * 2


def test_arrival_order_equals_event_time_order_for_in_order_input() -> None:
    rng = random.Random(3)
    times = sorted(rng.randrange(0, 3600 * S) for _ in range(500))
    starts: list[int] = []
    speed = [stagger_window(starts, t, 60 * S, watermark=t - 10 * S) for t in times]
    assert speed == assign_stagger(times, 60 * S)


def test_an_out_of_order_event_joins_a_window_that_covers_it() -> None:
    starts = [100 * S, 200 * S]
    assert stagger_window(starts, 130 * S, 60 * S) == 100 * S  # batch: same, its chain is unchanged
    assert starts == [100 * S, 200 * S]


def test_an_out_of_order_event_before_every_covering_window_opens_its_own() -> None:
    # arrival order 100, 190, 170: the speed layer keeps 190's window and opens one at 170, which
    # overlaps it; the batch layer (event-time order 100, 170, 190) puts 190 in 170's window.
    starts: list[int] = []
    arrival = [stagger_window(starts, t * S, 60 * S) for t in (100, 190, 170)]
    assert arrival == [100 * S, 190 * S, 170 * S]
    assert assign_stagger([100 * S, 170 * S, 190 * S], 60 * S) == [100 * S, 170 * S, 170 * S]


def test_behind_the_watermark_an_event_is_late_only_when_its_own_window_would_be_closed() -> None:
    starts = [100 * S]
    # its own window [150, 210) would end at or before the watermark: late, nothing changes
    assert stagger_window(starts, 150 * S, 60 * S, watermark=210 * S) is None
    assert starts == [100 * S]
    # 100's window covers it and is open: it joins
    assert stagger_window(starts, 150 * S, 60 * S, watermark=159 * S) == 100 * S
    # 100's window covers it but has closed (ends at 160 <= 170), its own [150, 210) is open: opens it
    assert stagger_window(starts, 150 * S, 60 * S, watermark=170 * S) == 150 * S
    assert starts == [100 * S, 150 * S]
    # not covered, and [215, 275) is still open: opens
    assert stagger_window(starts, 215 * S, 60 * S, watermark=170 * S) == 215 * S
    assert starts == [100 * S, 150 * S, 215 * S]


def test_a_stagger_event_is_late_only_if_late_for_the_tumbling_window_of_its_size() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        starts = sorted({rng.randrange(0, 600) * S for _ in range(rng.randrange(0, 4))})
        t, watermark = rng.randrange(0, 600) * S, rng.randrange(0, 700) * S
        if stagger_window(starts, t, 60 * S, watermark) is None:
            assert (t // (60 * S) + 1) * 60 * S <= watermark  # its minute has closed too


def test_micros_are_exact_for_event_times_to_the_microsecond() -> None:
    ts = datetime.fromisoformat("2026-01-01T10:00:30.123457+00:00").timestamp()
    assert micros(ts) == 1767261630123457
    assert format_start(1767261630123457) == "1767261630.123457"
    assert format_start(1767261630120000) == "1767261630.12"
    assert format_start(1767261630000000) == "1767261630"


# --- the catalogue ----------------------------------------------------------------------------------
def _metric(entry: str) -> str:
    return f"metrics:\n  - {{name: s, description: d, {entry}}}\n"


def test_a_stagger_entry_replaces_windows_and_names_its_window() -> None:
    catalogue = parse_catalogue(
        [("x.yaml", _metric("filter: {event_type: page_view}, by: [user], aggregate: count, stagger: 90s"))]
    )
    metric = catalogue["s"]
    assert metric.windows == []
    assert not metric.is_lifetime
    assert metric.is_stagger
    assert metric.stagger_seconds == 90
    assert metric.stagger_label == "stagger_90s"
    assert metric.window_labels == ["stagger_90s"]
    assert load_catalogue()["user_page_views_stagger"].stagger_label == "stagger_1m"
    assert load_catalogue()["page_views"].window_labels == ["1m", "1h", "1d"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("aggregate: count, stagger: 1m", "need `user` (or `user_id`) in `by`"),
        ("by: [session_id], aggregate: count, stagger: 1m", "need `user` (or `user_id`) in `by`"),
        ("by: [user], aggregate: count, stagger: 1m, windows: [1m]", "`stagger` replaces `windows`"),
        ("by: [user], aggregate: count, stagger: 2h", "stagger 2h: at most 1h"),
        ("by: [user], aggregate: count, stagger: 5x", "is not a duration"),
        ("by: [user], aggregate: top_k, item: properties.path, stagger: 1m", "supports the aggregates"),
        ("by: [user], aggregate: count, stagger: 1m, sliding: [5m]", "not from `stagger` ones"),
        ("by: [user], aggregate: count, stagger: 1m, retention: {1m: 1d}", "not one of the windows"),
        ("by: [user], formula: 'a + 1', stagger: 1m", "cannot have `stagger`"),
    ],
)
def test_invalid_stagger_entries_say_why(entry: str, message: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue([("x.yaml", _metric(entry))])
    assert message in str(caught.value)
    assert "x.yaml: metric s" in str(caught.value)


def test_a_formula_cannot_combine_stagger_metrics() -> None:
    text = (
        "metrics:\n"
        "  - {name: a, description: d, by: [user], aggregate: count, stagger: 1m}\n"
        "  - {name: b, description: d, by: [user], formula: 'a * 2'}\n"
    )
    with pytest.raises(CatalogueError, match="input a has stagger windows"):
        parse_catalogue([("x.yaml", text)])


def test_stagger_retention_is_the_metrics_then_the_default_of_its_size() -> None:
    text = _metric("by: [user_id], aggregate: count, stagger: 1m, retention: {stagger_1m: 3d}")
    metric = parse_catalogue([("x.yaml", text)])["s"]
    assert retention_s(metric, "stagger_1m", RETENTION) == 3 * 86400
    builtin = load_catalogue()["user_page_views_stagger"]
    assert retention_s(builtin, "stagger_1m", RETENTION) == 2 * 86400  # the default of 1m
    assert retention_s(builtin, "stagger_1m", {}) == 2 * 86400


# --- the speed compiler -----------------------------------------------------------------------------
def _page_view(user: str, ts: float) -> dict:
    return {
        "event_id": "6f1f8f5e-8d2a-4a53-9c55-2f0e5f0b7a10",
        "event_type": "page_view",
        "user_id": user,
        "session_id": "s",
        "ts": datetime.fromtimestamp(ts, UTC).isoformat(),
        "properties": {"path": "/"},
        "context": {},
    }


def _stagger_view():  # type: ignore[no-untyped-def]
    views = compile_views(load_catalogue(), SpeedKeys("t"), RETENTION)
    (cm,) = [c for c in views.metrics if c.name == "user_page_views_stagger"]
    return cm


T0 = 1767261600.0  # 2026-01-01T10:00:00Z


def test_the_compiler_counts_per_key_and_window_and_records_the_starts_it_opens() -> None:
    cm = _stagger_view()
    ops = ViewOps()
    for user, offset in [("u1", 0.5), ("u2", 10), ("u1", 30), ("u1", 60.5), ("u2", 69.9), ("u2", 70)]:
        assert ops.add(cm, _page_view(user, T0 + offset), T0 + offset, T0 - 300) == set()
    assert ops.counts == {
        f"t:v:user_page_views_stagger:stagger_1m:{int(T0)}.5:u1": 2,
        f"t:v:user_page_views_stagger:stagger_1m:{int(T0) + 60}.5:u1": 1,
        f"t:v:user_page_views_stagger:stagger_1m:{int(T0) + 10}:u2": 2,
        f"t:v:user_page_views_stagger:stagger_1m:{int(T0) + 70}:u2": 1,
    }
    # a window's key expires its retention after the window ends (rounded up to a second)
    assert ops.expiry[f"t:v:user_page_views_stagger:stagger_1m:{int(T0)}.5:u1"] == int(T0) + 61 + 2 * 86400
    zadds = {op[1]: op for op in decode_ops(ops.payload()) if op[0] == "zadd"}
    u1 = zadds["t:stagger:user_page_views_stagger:stagger_1m:u1"]
    assert u1[2] == int(T0) + 121 + 2 * 86400  # the newest window's end plus retention
    assert u1[4:] == [str(micros(T0 + 0.5)), f"{int(T0)}.5", str(micros(T0 + 60.5)), f"{int(T0) + 60}.5"]
    # trimmed only below both the watermark minus two windows and the newest start minus retention
    assert int(u1[3]) == min(micros(T0 - 300) - 120 * S, micros(T0 + 60.5) - 2 * 86400 * S)


def test_state_loaded_for_a_key_decides_like_one_long_batch() -> None:
    cm = _stagger_view()
    events = [T0 + x for x in (0, 20, 59, 61, 100, 130, 185, 190)]
    whole = ViewOps()
    for ts in events:
        whole.add(cm, _page_view("u1", ts), ts, 0.0)
    # the same events in two batches: the second starts from the first's starts (as loaded from Redis)
    first = ViewOps()
    for ts in events[:4]:
        first.add(cm, _page_view("u1", ts), ts, 0.0)
    state = {k: list(v) for k, v in first.starts.items()}
    second = ViewOps(starts=state)
    for ts in events[4:]:
        second.add(cm, _page_view("u1", ts), ts, 0.0)
    merged = dict(first.counts)
    for key, n in second.counts.items():
        merged[key] = merged.get(key, 0) + n
    assert merged == whole.counts
    # windows at 0 (0, 20, 59), 61 (61 | 100: across the two batches), 130 (130, 185), 190
    assert sorted(whole.counts.values()) == [1, 2, 2, 3]
    (opened,) = second.opened.values()
    assert opened[2] == [micros(T0 + 130), micros(T0 + 190)]  # 61 was the first batch's, not reopened


def test_a_late_event_is_reported_under_the_stagger_window() -> None:
    cm = _stagger_view()
    ops = ViewOps()
    assert ops.add(cm, _page_view("u1", T0), T0, T0 + 60) == {"stagger_1m"}
    assert ops.counts == {}
    assert ops.payload() == []


def test_the_evaluator_and_compiler_read_the_stagger_entry_alike() -> None:
    metric = load_catalogue()["user_page_views_stagger"]
    event = _page_view("u9", T0)
    assert [(c.key, c.value, c.weight) for c in contributions(metric, event)] == [(("u9",), 1, 1.0)]
    assert _stagger_view().read(event, T0) == [(("u9",), 1, 1.0)]
