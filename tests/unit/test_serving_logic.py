"""The serving layer's pure logic: boundary, combining, drift arithmetic, retention planning, times,
request validation (no engine is reached: the checks come before any I/O)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from lambdalake.metrics.catalogue import load_catalogue
from serving.api import create_app
from serving.batch_view import Boundary, boundary_of, hours_of
from serving.drift import DriftRow, compare, drift_metrics, latest_by_metric
from serving.queries import alert_json, contract_event_types
from serving.reconcile import (
    Degraded,
    QueryError,
    Reconciler,
    UnknownMetric,
    combine_sources,
    combine_values,
)
from serving.retention import batch_windows, expiry_ms, parse_view_key
from serving.times import ceil, floor, iso, parse_time
from tests.conftest import make_settings

H = 3600
T0 = 1_795_000_000 // 86400 * 86400


def test_boundary_is_the_contiguous_published_run_from_the_first_hour() -> None:
    assert boundary_of([]) == Boundary(None, None)
    rows = [(T0 + 2 * H, False), (T0, False), (T0 + H, False), (T0 + 4 * H, False)]
    assert boundary_of(rows) == Boundary(T0, T0 + 2 * H)  # T0+3h missing: T0+4h is not batch yet
    reprocessing = [(T0, False), (T0 + H, True), (T0 + 2 * H, False)]
    assert boundary_of(reprocessing) == Boundary(T0, T0)
    assert boundary_of([(T0, True), (T0 + H, False)]) == Boundary(None, None)
    boundary = Boundary(T0 + H, T0 + 3 * H)
    assert [boundary.covers(T0 + i * H) for i in range(5)] == [False, True, True, True, False]
    assert not Boundary(None, None).covers(T0)


def test_sources_and_values_combine() -> None:
    assert combine_sources(["batch", "batch"]) == "batch"
    assert combine_sources(["batch", "speed"]) == "mixed"
    assert combine_sources(["batch", "unavailable"]) == "unavailable"
    assert combine_values("count", [1.0, None, 2.0]) == 3.0
    assert combine_values("min", [5.0, None, 2.0]) == 2.0
    assert combine_values("max", [5.0, 7.0]) == 7.0
    assert combine_values("sum", [None, None]) is None
    degraded = Degraded()
    degraded.add("redis unavailable: x")
    degraded.add("redis unavailable: x")
    assert degraded == ["redis unavailable: x"]


def test_drift_arithmetic() -> None:
    assert compare(20.0, 2.0, 0.02) == (18.0, pytest.approx(0.9), True)
    assert compare(100.0, 101.0, 0.02) == (1.0, pytest.approx(0.01), False)
    assert compare(None, 3.0, 0.02) == (3.0, None, True)  # batch saw nothing
    assert compare(None, None, 0.02) == (None, None, False)  # speed expired: nothing to compare
    assert compare(0.0, 0.0, 0.02) == (0.0, 0.0, False)
    assert compare(-10.0, -9.0, 0.02) == (1.0, pytest.approx(0.1), True)
    rows = [
        DriftRow("a", T0, 1.0, 1.0, 0.0, 0.0, False),
        DriftRow("a", T0 + H, 1.0, 2.0, 1.0, 1.0, True),
        DriftRow("a", T0 + 2 * H, 1.0, None, None, None, False),
    ]
    assert latest_by_metric(rows)["a"].hour == T0 + H


def test_drift_covers_unkeyed_hourly_scalars_and_their_formulas() -> None:
    names = {m.name for m in drift_metrics(load_catalogue())}
    assert {"page_views", "revenue", "active_users", "cart_abandonment_rate"} <= names
    assert not names & {"trending_products_views", "user_events", "user_page_views", "recently_viewed"}


def test_retention_plans_only_published_batch_buckets() -> None:
    catalogue = load_catalogue()
    held = batch_windows(catalogue)
    assert held["page_views"] == {"1m", "1h", "1d"}
    assert "recently_viewed" not in held  # batch: false
    assert "user_events" not in held  # lifetime
    assert parse_view_key("ll", "ll:v:page_views:1m:1795000020") == ("page_views", "1m", 1795000020)
    assert parse_view_key("ll", "ll:v:user_page_views:1m:1795000020:u1") == (
        "user_page_views",
        "1m",
        1795000020,
    )
    assert parse_view_key("ll", "ll:v:user_events:lifetime:u1") is None
    assert parse_view_key("ll", "llx:v:page_views:1m:1") is None
    assert parse_view_key("ll", "ll:views:shard") is None
    published = {T0: float(T0 + 2 * H), T0 + H: float(T0 + 3 * H)}
    now = float(T0 + 3 * H)
    assert expiry_ms(published, T0 + H, 3600, 600, now) == 600_000
    assert expiry_ms(published, T0 + 60, 60, 600, now) == 1  # published long ago: expire now
    assert expiry_ms(published, T0 + 2 * H, 3600, 600, now) is None  # not published
    assert expiry_ms(published, T0, 86400, 600, now) is None  # the day is not wholly published
    assert hours_of(T0 + 30, T0 + H + 1) == [T0, T0 + H]


def test_times() -> None:
    assert parse_time("2026-11-22T09:00:00Z") == parse_time("2026-11-22T10:00:00+01:00")
    assert parse_time("2026-11-22T09:00:00") == parse_time("2026-11-22T09:00:00Z")
    assert iso(parse_time("2026-11-22T09:00:00Z")) == "2026-11-22T09:00:00Z"
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")
    assert floor(3599, 3600) == 0
    assert ceil(3601, 3600) == 7200
    assert ceil(3600, 3600) == 3600


def test_alert_entries_in_the_api_shape() -> None:
    alert = {
        "alert_id": "e1",
        "kinds": ["high_value", "fraud"],
        "user_id": "u1",
        "order_id": "o1",
        "amount": 1500.0,
        "score": 0.5,
        "reasons": ["purchase_velocity"],
        "ts": "2026-11-22T09:00:00+00:00",
    }
    body = alert_json(b"1-0", {b"alert_id": b"e1", b"alert": orjson.dumps(alert)})
    assert body["type"] == "fraud"
    assert body["kinds"] == ["high_value_purchase", "fraud"]
    assert (body["id"], body["event_id"], body["ts"]) == ("1-0", "e1", "2026-11-22T09:00:00Z")
    assert "page_view" in contract_event_types()
    assert "envelope" not in contract_event_types()


def test_requests_are_validated_before_any_engine_call(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # nothing listens on these ports
    reconciler = Reconciler(settings)
    with pytest.raises(UnknownMetric):
        reconciler.series("nope", 0, 3600)
    with pytest.raises(QueryError, match="must be before end"):
        reconciler.series("page_views", 3600, 0)
    with pytest.raises(QueryError, match="granularity"):
        reconciler.series("page_views", 0, 3600, "week")
    with pytest.raises(QueryError, match="no 1h window"):
        reconciler.series("user_page_views", 0, 3600, "hour", ["u1"])
    with pytest.raises(QueryError, match="lifetime"):
        reconciler.series("user_events_by_type", 0, 3600, "minute", ["u", "t"])
    with pytest.raises(QueryError, match="2 key value"):
        reconciler.series("user_events_by_type", 0, 3600, "minute", ["u"])
    if "user_page_views_stagger" in reconciler.catalogue.by_name:
        with pytest.raises(QueryError, match="stagger"):
            reconciler.series("user_page_views_stagger", 0, 3600, "minute", ["u1"])
    reconciler.check(reconciler.metric("page_views"), "day", ())
    reconciler.check(reconciler.metric("trending_products_views"), "day", ())
    app = create_app(settings)
    client = TestClient(app)
    assert client.get("/v1/metrics/page_views").status_code == 401
    bad = client.get("/v1/metrics/page_views?granularity=week", headers={"X-Read-Key": "local-read-key"})
    assert bad.status_code == 422
    assert client.get("/v1/metrics/nope", headers={"X-Read-Key": "local-read-key"}).status_code == 404
    app.state.serving.stop()


class _Conn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_the_connection_pool_is_bounded_and_drops_failed_connections() -> None:
    from serving.engines import ConnectionPool, PoolExhausted

    made: list[_Conn] = []

    def connect() -> _Conn:
        made.append(_Conn())
        return made[-1]

    pool = ConnectionPool(connect, size=1, wait_s=0.01)
    with pool.connection() as (first, reused):
        assert not reused
        with pytest.raises(PoolExhausted), pool.connection():
            pass  # the only slot is taken
    with pool.connection() as (again, reused):
        assert (again, reused) == (first, True)  # kept open and reused
    with pytest.raises(RuntimeError), pool.connection():
        raise RuntimeError("query failed")
    assert first.closed  # a connection that saw an error is not reused
    with pool.connection() as (fresh, reused):
        assert fresh is not first
        assert not reused
    assert len(made) == 2
