"""The query functions the serving layer calls: sliding spans, ranked views and derived formulas,
on views written by the views group from hand-made events."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis as redis_lib

from lambdalake.consumer.processor import BatchContext
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from speed_layer.metrics import SpeedMetrics
from speed_layer.query import SpeedQuery
from speed_layer.views import ViewsProcessor
from tests.integration.test_speed_views import speed_settings

pytestmark = pytest.mark.integration

NOW = time.time() // 60 * 60 + 30  # 30 s into the current minute (recent: buckets keep 2 days)


def _event(kind: str, minutes_ago: float, user: str, session: str, **properties: Any) -> dict[str, Any]:
    ts = datetime.fromtimestamp(NOW - 60 * minutes_ago, UTC).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "user_id": user,
        "session_id": session,
        "ts": ts,
        "properties": properties,
        "context": {},
    }


@pytest.fixture(scope="module")
def query(engines: Settings) -> SpeedQuery:
    # an hour of allowed lateness: every event here is in time, whatever order it comes in
    settings = speed_settings(engines, speed_validate_events=False, allowed_lateness_s=3600)
    client = redis_lib.Redis.from_url(settings.redis_url)
    events = [
        _event("page_view", 0, "u1", "s1", path="/"),
        _event("page_view", 3, "u2", "s2", path="/"),
        _event("page_view", 7, "u3", "s3", path="/"),  # outside the last 5 minutes
        _event("page_view", 50, "u4", "s4", path="/"),
        _event("product_view", 1, "u1", "s1", product_id="A", category="books"),
        _event("product_view", 2, "u2", "s2", product_id="A", category="books"),
        _event("product_view", 2, "u2", "s2", product_id="B", category="toys"),
        _event("product_view", 20, "u3", "s3", product_id="B", category="toys"),
        _event("product_view", 21, "u3", "s3", product_id="B", category="toys"),
        _event("add_to_cart", 4, "u1", "s1", product_id="A", quantity=1, price=10.0, cart_id="s1"),
        _event("add_to_cart", 4, "u2", "s2", product_id="A", quantity=1, price=10.0, cart_id="s2"),
        _event("purchase", 3, "u1", "s1", order_id="o1", amount=30.0, currency="USD", items=[]),
        _event("purchase", 30, "u1", "s9", order_id="o2", amount=10.0, currency="USD", items=[]),
    ]
    records = [
        StreamRecord("shard-1", str(100 + i), e["user_id"], orjson.dumps(e), NOW)
        for i, e in enumerate(events)
    ]
    ViewsProcessor(settings, client, SpeedMetrics()).process_records(
        records, BatchContext("views", settings.stream_name, "shard-1", "w", 1, 0, 1)
    )
    return SpeedQuery(settings, client)


def test_sliding_spans_end_with_the_bucket_holding_now(query: SpeedQuery) -> None:
    metric = query.catalogue["active_users"]
    window, buckets = query.sliding_buckets(metric, "5m", NOW)
    minute = int(NOW // 60) * 60
    assert window == "1m"
    assert buckets == [minute - 240, minute - 180, minute - 120, minute - 60, minute]
    assert query.sliding_buckets(metric, "1d", NOW)[0] == "1h"  # 24 hourly buckets, not 1440 minutes
    assert len(query.sliding_buckets(metric, "30d", NOW)[1]) == 30
    assert query.sliding("active_users", "5m", now=NOW) == 2.0  # u1, u2 (u3 was 7 minutes ago)
    assert query.sliding("active_users", "1h", now=NOW) == 4.0


def test_trending_over_sliding_spans_and_per_category(query: SpeedQuery) -> None:
    assert query.top("trending_products_views", span="5m", now=NOW) == [("A", 2.0), ("B", 1.0)]
    assert query.top("trending_products_views", span="1h", now=NOW) == [("B", 3.0), ("A", 2.0)]
    assert query.top("trending_products_views_by_category", ["toys"], span="15m", now=NOW) == [("B", 1.0)]


def test_derived_metrics_and_lists(query: SpeedQuery) -> None:
    # 2 carting sessions in the last 5 minutes, 1 of them purchased
    assert query.sliding("cart_abandonment_rate", "5m", now=NOW) == pytest.approx(0.5)
    assert query.value("user_average_order_value", ["u1"]) == pytest.approx(20.0)
    assert query.value("user_average_order_value", ["u3"]) is None  # no orders: no average
    assert query.value("session_duration_s", ["s3"]) == pytest.approx(14 * 60)
    assert query.recent("recently_viewed", ["u2"]) == ["B", "A"]
    assert query.related("co_viewed_products", "A") == [("B", 1.0)]
    minute = int(NOW // 60) * 60
    series = query.series("page_views", "1m", minute - 4 * 60, minute + 60)
    assert series == [
        (minute - 240, None),
        (minute - 180, 1.0),
        (minute - 120, None),
        (minute - 60, None),
        (minute, 1.0),
    ]
