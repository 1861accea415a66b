"""The reconciler on the real engines: speed views written by the views group from hand-made events,
batch views loaded into the warehouse tables, the watermark moved through batch/watermark.py.

Batch values are chosen ten times the speed values, so every point's value shows where it came from.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis as redis_lib

from batch.watermark import Watermark
from lambdalake.consumer.processor import BatchContext
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from serving.engines import EngineUnavailable
from serving.reconcile import Reconciler
from serving.retention import expire_published
from speed_layer.keys import SpeedKeys
from speed_layer.metrics import SpeedMetrics
from speed_layer.views import ViewsProcessor
from tests.conftest import free_port
from warehouse.query import warehouse_loader

pytestmark = pytest.mark.integration

DAY = int(time.time()) // 86400 * 86400 - 86400  # yesterday 00:00 UTC: within every speed retention
H = 3600
H0, H1, H2, H3, H4 = (DAY + i * H for i in range(5))
SCHEMA = "test_serving"

# (event_type, hour start, minute, user, session, properties)
EVENTS: list[tuple[str, int, int, str, str, dict[str, Any]]] = [
    ("page_view", H1, 5, "u1", "s1", {"path": "/a"}),
    ("page_view", H1, 10, "u2", "s2", {"path": "/b"}),
    ("page_view", H2, 1, "u1", "s1", {"path": "/a"}),
    ("page_view", H2, 2, "u1", "s1", {"path": "/a"}),
    ("page_view", H2, 3, "u3", "s3", {"path": "/c"}),
    ("page_view", H3, 1, "u1", "s4", {"path": "/a"}),
    ("page_view", H3, 2, "u2", "s5", {"path": "/a"}),
    ("page_view", H3, 3, "u2", "s5", {"path": "/d"}),
    ("page_view", H3, 4, "u3", "s6", {"path": "/a"}),
    ("page_view", H4, 1, "u4", "s7", {"path": "/a"}),
    ("product_view", H1, 20, "u1", "s1", {"product_id": "A", "category": "books"}),
    ("product_view", H3, 20, "u1", "s4", {"product_id": "B", "category": "toys"}),
    ("product_view", H3, 21, "u2", "s5", {"product_id": "B", "category": "toys"}),
    ("add_to_cart", H3, 30, "u1", "s4", {"product_id": "B", "quantity": 1, "price": 5.0, "cart_id": "c4"}),
    ("add_to_cart", H3, 31, "u2", "s5", {"product_id": "B", "quantity": 1, "price": 5.0, "cart_id": "c5"}),
    ("purchase", H1, 40, "u1", "s1", {"order_id": "o1", "amount": 10.0, "currency": "USD", "items": []}),
    ("purchase", H3, 40, "u1", "s4", {"order_id": "o2", "amount": 5.0, "currency": "USD", "items": []}),
]

# (metric, window, bucket start, key, item, rank, value): the batch view, 10x the speed values
BATCH_ROWS: list[tuple[str, str, int, list[str], str | None, int | None, float]] = [
    ("page_views", "1h", H1, [], None, None, 20.0),
    ("page_views", "1h", H2, [], None, None, 30.0),
    ("page_views", "1m", H1 + 5 * 60, [], None, None, 10.0),
    ("page_views", "1m", H1 + 10 * 60, [], None, None, 10.0),
    ("product_views", "1h", H1, [], None, None, 1.0),  # equal to speed: no drift
    ("orders", "1h", H1, [], None, None, 10.0),
    ("revenue", "1h", H1, [], None, None, 100.0),
    ("cart_sessions", "1h", H1, [], None, None, 4.0),
    ("purchase_sessions", "1h", H1, [], None, None, 1.0),
    ("unique_pages", "1h", H1, [], None, None, 20.0),
    ("trending_products_views", "1h", H1, [], "A", 1, 10.0),
    ("trending_products_views", "1h", H1, [], "Z", 2, 5.0),
    ("page_views", "1d", DAY - 86400, [], None, None, 999.0),
    ("user_events", "lifetime", H1, ["u1"], None, None, 30.0),
    ("user_events", "lifetime", H2, ["u1"], None, None, 20.0),
    ("user_orders", "lifetime", H1, ["u1"], None, None, 10.0),
    ("user_lifetime_value", "lifetime", H1, ["u1"], None, None, 100.0),
]


def _event(
    kind: str, hour: int, minute: int, user: str, session: str, props: dict[str, Any]
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "user_id": user,
        "session_id": session,
        "ts": datetime.fromtimestamp(hour + minute * 60 + 7, UTC).isoformat(),
        "properties": props,
        "context": {},
    }


def feed_speed(
    settings: Settings,
    events: list[tuple[str, int, int, str, str, dict[str, Any]]],
    processor: Any = ViewsProcessor,
) -> None:
    """Run events through a real speed-layer group into Redis (every event in time: lateness 3 days)."""
    client = redis_lib.Redis.from_url(settings.redis_url)
    records = [
        StreamRecord("shard-1", str(1000 + i), e[3], orjson.dumps(_event(*e)), time.time())
        for i, e in enumerate(events)
    ]
    processor(settings, client, SpeedMetrics()).process_records(
        records, BatchContext(processor.group, settings.stream_name, "shard-1", "w", 1, 0, 1)
    )
    client.close()


def load_batch(
    settings: Settings, rows: list[tuple[str, str, int, list[str], str | None, int | None, float]]
) -> None:
    """Create the warehouse schema (the loader's DDL) and insert batch view rows."""
    loader = warehouse_loader(settings)
    with loader.connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {settings.warehouse_schema} CASCADE")
        conn.commit()
    loader.ensure_schema()
    with loader.connect() as conn:
        for metric, window, bucket, key, item, rank, value in rows:
            table = "agg_metrics_daily_v1" if window == "1d" else "agg_metrics_hourly_v1"
            conn.execute(
                f"INSERT INTO {table} (metric, metric_window, bucket_start, metric_key, item, item_rank, value)"
                " VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)",
                (
                    metric,
                    window,
                    datetime.fromtimestamp(bucket, UTC).replace(tzinfo=None),
                    orjson.dumps(key).decode(),
                    item,
                    rank,
                    value,
                ),
            )
        conn.commit()


def serving_settings(engines: Settings, **overrides: Any) -> Settings:
    """The session's engines with this test's own key prefix and watermark table."""
    values: dict[str, Any] = {
        "speed_key_prefix": f"sv{uuid.uuid4().hex[:6]}",
        "allowed_lateness_s": 3 * 86400,
        "speed_validate_events": False,
        "warehouse_schema": SCHEMA,
        "batch_meta_schema": f"test_serving_meta_{uuid.uuid4().hex[:8]}",
        "serving_watermark_cache_s": 0.0,
        "serving_engine_retry_s": 0.0,
    }
    values.update(overrides)
    return engines.model_copy(update=values)


@pytest.fixture(scope="module")
def base_settings(engines: Settings) -> Settings:
    settings = serving_settings(engines)
    feed_speed(settings, EVENTS)
    load_batch(settings, BATCH_ROWS)
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """The module's data, a watermark table of this test's own."""
    return base_settings.model_copy(update={"batch_meta_schema": f"test_serving_meta_{uuid.uuid4().hex[:8]}"})


def publish(settings: Settings, *hours: int) -> Watermark:
    watermark = Watermark(settings)
    for hour in hours:
        watermark.mark_published(datetime.fromtimestamp(hour, UTC), 1)
    return watermark


@pytest.fixture
def reconciler(settings: Settings) -> Iterator[Reconciler]:
    r = Reconciler(settings)
    yield r
    r.close()


def _values(series: Any) -> list[tuple[int, float | None, str]]:
    return [(p.start, p.value, p.source) for p in series.points]


def test_hours_up_to_the_watermark_come_from_batch_the_rest_from_speed(
    settings: Settings, reconciler: Reconciler
) -> None:
    publish(settings, H1, H2)
    series = reconciler.series("page_views", H0, H4 + H, "hour")
    assert series.watermark == H2
    assert _values(series) == [
        (H0, None, "speed"),  # before the first published hour: speed (it has nothing)
        (H1, 20.0, "batch"),
        (H2, 30.0, "batch"),
        (H3, 4.0, "speed"),
        (H4, 1.0, "speed"),
    ]
    assert series.degraded == []
    # no gap, no overlap: one point per hour, contiguous, each from exactly one source
    starts = [p.start for p in series.points]
    assert starts == list(range(H0, H4 + H, H))


def test_minutes_follow_their_hour(settings: Settings, reconciler: Reconciler) -> None:
    publish(settings, H1)
    series = reconciler.series("page_views", H1, H2 + 5 * 60, "minute")
    by_start = {p.start: p for p in series.points}
    assert len(series.points) == 65
    assert (by_start[H1 + 5 * 60].value, by_start[H1 + 5 * 60].source) == (10.0, "batch")
    assert (by_start[H1 + 6 * 60].value, by_start[H1 + 6 * 60].source) == (None, "batch")
    assert (by_start[H2 + 60].value, by_start[H2 + 60].source) == (1.0, "speed")
    assert {p.source for p in series.points if p.start < H2} == {"batch"}
    assert {p.source for p in series.points if p.start >= H2} == {"speed"}


def test_the_boundary_moves_on_publish_and_back_on_reprocessing(
    settings: Settings, reconciler: Reconciler
) -> None:
    watermark = publish(settings, H1)
    assert _values(reconciler.series("page_views", H1, H3, "hour")) == [
        (H1, 20.0, "batch"),
        (H2, 3.0, "speed"),
    ]
    watermark.mark_published(datetime.fromtimestamp(H2, UTC), 1)
    assert _values(reconciler.series("page_views", H1, H3, "hour")) == [
        (H1, 20.0, "batch"),
        (H2, 30.0, "batch"),
    ]
    watermark.mark_reprocessing(datetime.fromtimestamp(H1, UTC))
    series = reconciler.series("page_views", H1, H3, "hour")
    assert series.watermark is None  # the first published hour is being reprocessed: nothing is batch
    assert _values(series) == [(H1, 2.0, "speed"), (H2, 3.0, "speed")]
    watermark.mark_published(datetime.fromtimestamp(H1, UTC), 2)
    assert reconciler.series("page_views", H1, H3, "hour").watermark == H2


def test_the_watermark_is_cached_at_most_the_configured_time(settings: Settings) -> None:
    cached = Reconciler(settings.model_copy(update={"serving_watermark_cache_s": 60.0}))
    try:
        publish(settings, H1)
        assert cached.series("page_views", H1, H2, "hour").watermark == H1
        publish(settings, H2)
        assert cached.series("page_views", H1, H2, "hour").watermark == H1  # within the cache time
        cached.batch.forget()
        assert cached.series("page_views", H1, H2, "hour").watermark == H2
    finally:
        cached.close()


def test_day_points_mix_batch_and_speed_hours_for_additive_metrics(
    settings: Settings, reconciler: Reconciler
) -> None:
    # every hour of the day before and the first three of this day are published
    publish(settings, *range(DAY - 86400, H3, H))
    series = reconciler.series("page_views", DAY - 86400, DAY + 86400, "day")
    assert _values(series) == [
        (DAY - 86400, 999.0, "batch"),  # the whole day published: the daily table
        (DAY, 20.0 + 30.0 + 4.0 + 1.0, "mixed"),  # batch H1, H2 (H0 none) + speed H3, H4
    ]
    revenue = reconciler.series("revenue", DAY, DAY + 86400, "day")
    assert _values(revenue) == [(DAY, 100.0 + 5.0, "mixed")]
    # count_distinct cannot add hours: the speed layer's day HyperLogLog
    users = reconciler.series("active_users", DAY, DAY + 86400, "day").points[0]
    assert (users.value, users.source, users.approximate) == (4.0, "speed", True)


def test_day_points_without_batch_come_from_the_speed_day(settings: Settings, reconciler: Reconciler) -> None:
    series = reconciler.series("page_views", DAY, DAY + 86400, "day")
    assert [(p.value, p.source) for p in series.points] == [(10.0, "speed")]
    assert series.degraded == []  # no watermark table yet (nothing ever published): not an outage
    assert series.watermark is None


def test_derived_metrics_evaluate_over_reconciled_inputs(settings: Settings, reconciler: Reconciler) -> None:
    publish(settings, H1)
    points = {p.start: p for p in reconciler.series("cart_abandonment_rate", H1, H4, "hour").points}
    assert (points[H1].value, points[H1].source, points[H1].approximate) == (
        pytest.approx(0.75),
        "batch",
        False,
    )
    assert (points[H2].value, points[H2].source) == (None, "speed")  # no carts: no rate
    assert (points[H3].value, points[H3].source, points[H3].approximate) == (
        pytest.approx(0.5),
        "speed",
        True,
    )


def test_top_k_points_carry_items(settings: Settings, reconciler: Reconciler) -> None:
    publish(settings, H1)
    points = reconciler.series("trending_products_views", H1, H4, "hour").points
    assert [(p.source, p.items) for p in points] == [
        ("batch", [("A", 10.0), ("Z", 5.0)]),
        ("speed", []),
        ("speed", [("B", 2.0)]),
    ]


def test_lifetime_values_from_speed_and_from_batch_partials(
    settings: Settings, reconciler: Reconciler
) -> None:
    publish(settings, H1, H2)
    value = reconciler.lifetime("user_events", ["u1"])
    assert (value.value, value.source) == (9.0, "speed")
    aov = reconciler.lifetime("user_average_order_value", ["u1"])
    assert (aov.value, aov.source) == (pytest.approx(7.5), "speed")
    down = Reconciler(settings.model_copy(update={"redis_port": free_port()}))
    try:
        value = down.lifetime("user_events", ["u1"])
        assert (value.value, value.source) == (50.0, "batch")  # 30 + 20 from the hourly partials
        assert down.lifetime("user_average_order_value", ["u1"]).value == pytest.approx(10.0)
    finally:
        down.close()


def test_redis_down_answers_published_hours_from_batch_and_the_rest_unavailable(settings: Settings) -> None:
    publish(settings, H1, H2)
    down = Reconciler(settings.model_copy(update={"redis_port": free_port()}))
    try:
        series = down.series("page_views", H1, H4, "hour")
    finally:
        down.close()
    assert _values(series) == [(H1, 20.0, "batch"), (H2, 30.0, "batch"), (H3, None, "unavailable")]
    assert len(series.degraded) == 1
    assert series.degraded[0].startswith("redis unavailable:")


def test_warehouse_down_answers_everything_from_speed(settings: Settings) -> None:
    publish(settings, H1, H2)
    down = Reconciler(settings.model_copy(update={"warehouse_port": free_port()}))
    try:
        series = down.series("page_views", H1, H4, "hour")
        assert series.watermark is None
        assert _values(series) == [(H1, 2.0, "speed"), (H2, 3.0, "speed"), (H3, 4.0, "speed")]
        assert series.degraded[0].startswith("warehouse unavailable:")
        day = down.series("page_views", DAY, DAY + 86400, "day").points[0]
        assert (day.value, day.source) == (10.0, "speed")
    finally:
        down.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: what a hung engine looks like."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_hung_engines_cost_their_timeouts_not_a_hang(settings: Settings, silent_port: int) -> None:
    hung = Reconciler(
        settings.model_copy(
            update={
                "redis_port": silent_port,
                "warehouse_port": silent_port,
                "serving_redis_timeout_s": 0.5,
                "serving_warehouse_connect_timeout_s": 1.0,
                "serving_engine_retry_s": 60.0,
            }
        )
    )
    try:
        started = time.monotonic()
        series = hung.series("page_views", H1, H4, "hour")
        first = time.monotonic() - started
        assert {p.source for p in series.points} == {"unavailable"}
        assert len(series.degraded) == 2
        # a generous bound (the timeouts add up to a few seconds): the point is that it returns
        assert first < 30
        # the breakers remember: the next request does not wait for the engines again
        started = time.monotonic()
        with pytest.raises(EngineUnavailable):
            hung.batch.boundary()
        assert hung.series("page_views", H1, H4, "hour").degraded == series.degraded
        assert time.monotonic() - started < first
    finally:
        hung.close()


def test_retention_expires_only_keys_of_published_hours(engines: Settings) -> None:
    settings = serving_settings(engines, serving_speed_retention_after_publish_s=600)
    feed_speed(settings, EVENTS)
    publish(settings, H1, H2)
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = SpeedKeys(settings.speed_key_prefix)
    published = [keys.view("page_views", "1h", H1), keys.view("page_views", "1m", H2 + 60)]
    later = [keys.view("page_views", "1h", H3), keys.view("page_views", "1m", H3 + 60)]
    day = keys.view("page_views", "1d", DAY)  # the day is not wholly published
    lifetime = keys.view("user_events", "lifetime", None, ["u1"])
    shorter = keys.view("page_views", "1h", H2)
    client.expire(shorter, 100)
    before = {k: client.ttl(k) for k in [*later, day, lifetime]}
    assert all(t > 600 for t in before.values())
    r = Reconciler(settings)
    try:
        result = expire_published(settings, client, r.batch, r.catalogue)
    finally:
        r.close()
    assert result.keys_expired > 0
    for k in published:
        assert 0 < client.ttl(k) <= 600
    assert 0 < client.ttl(shorter) <= 100  # never lengthened
    for k in [*later, day, lifetime]:
        assert client.ttl(k) > 600  # untouched
    # a key of another prefix (another deployment's, or a test's) is never scanned
    assert result.keys_seen == len(
        list(client.scan_iter(match=f"{settings.speed_key_prefix}:v:*", count=1000))
    )
    client.close()
