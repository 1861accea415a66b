"""The serving HTTP API on the real engines: the contract of docs/serving.md, auth, bad parameters,
degraded answers, drift numbers (hand-computed from the data of test_serving_reconcile) and metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lambdalake.settings import Settings
from serving.api import create_app
from serving.times import iso
from speed_layer.alerts import AlertsProcessor
from tests.conftest import free_port
from tests.integration.test_serving_reconcile import (
    BATCH_ROWS,
    DAY,
    EVENTS,
    H0,
    H1,
    H2,
    H3,
    H4,
    feed_speed,
    load_batch,
    publish,
    serving_settings,
)

pytestmark = pytest.mark.integration

KEY = {"X-Read-Key": "local-read-key"}
EXTRA = [  # u5 views A and C in one session: C is "viewed together" with A
    ("product_view", H2, 50, "u5", "s9", {"product_id": "A", "category": "books"}),
    ("product_view", H2, 51, "u5", "s9", {"product_id": "C", "category": "books"}),
]
BIG = ("purchase", H4, 10, "u9", "s10", {"order_id": "o9", "amount": 1500.0, "currency": "USD", "items": []})


@pytest.fixture(scope="module")
def settings(engines: Settings) -> Settings:
    settings = serving_settings(engines, warehouse_schema="test_serving_api")
    feed_speed(settings, EVENTS + EXTRA)
    feed_speed(settings, [BIG], AlertsProcessor)
    load_batch(settings, BATCH_ROWS)
    publish(settings, H1, H2)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    yield TestClient(app)
    app.state.serving.stop()


def _get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=KEY)
    assert response.status_code == 200, response.text
    return response.json()


def test_read_keys_are_required_on_v1(client: TestClient) -> None:
    path = "/v1/metrics/page_views"
    missing = client.get(path)
    assert missing.status_code == 401
    assert "read key" in missing.json()["detail"]
    assert client.get(path, headers={"X-Read-Key": "nope"}).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer local-read-key"}).status_code == 200
    assert client.get(path, headers=KEY).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200
    assert "/v1/metrics/{name}" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/metrics/page_views", {"granularity": "week"}, "minute"),
        ("/v1/metrics/page_views", {"start": iso(H2), "end": iso(H1)}, "must be before end"),
        ("/v1/metrics/page_views", {"start": "yesterday"}, "ISO-8601"),
        ("/v1/metrics/page_views", {"key": "u1"}, "key value"),
        ("/v1/metrics/user_page_views", {}, "key value"),
        ("/v1/metrics/user_events", {"key": "u1"}, "lifetime"),
        ("/v1/metrics/recently_viewed", {"key": "u1"}, "lifetime"),
        ("/v1/metrics/user_page_views", {"key": "u1", "granularity": "hour"}, "no 1h window"),
        ("/v1/metrics/page_views", {"granularity": "minute", "start": iso(H0 - 30 * 86400)}, "at most"),
        ("/v1/trending", {"window": "7m"}, "sliding spans"),
        ("/v1/trending", {"by": "likes"}, "views"),
        ("/v1/alerts", {"limit": 0}, "greater than or equal"),
        ("/v1/drift", {"metric": "user_events"}, "hourly scalar"),
    ],
)
def test_bad_parameters_are_422_with_the_reason(
    client: TestClient, path: str, params: dict[str, Any], reason: str
) -> None:
    response = client.get(path, params=params, headers=KEY)
    assert response.status_code == 422, response.text
    assert reason in str(response.json()["detail"])


def test_unknown_metric_and_user_are_404(client: TestClient) -> None:
    assert client.get("/v1/metrics/nope", headers=KEY).status_code == 404
    assert client.get("/v1/users/nobody/profile", headers=KEY).status_code == 404


def test_metric_series_follows_the_contract(client: TestClient) -> None:
    body = _get(client, "/v1/metrics/page_views", start=iso(H1), end=iso(H4), granularity="hour")
    assert body == {
        "metric": "page_views",
        "granularity": "hour",
        "start": iso(H1),
        "end": iso(H4),
        "watermark": iso(H2),
        "points": [
            {"start": iso(H1), "value": 20.0, "source": "batch", "approximate": False},
            {"start": iso(H2), "value": 30.0, "source": "batch", "approximate": False},
            {"start": iso(H3), "value": 4.0, "source": "speed", "approximate": False},
        ],
        "degraded": [],
    }
    top = _get(client, "/v1/metrics/trending_products_views", start=iso(H1), end=iso(H2))
    assert top["points"][0]["items"] == [{"item": "A", "score": 10.0}, {"item": "Z", "score": 5.0}]
    assert top["points"][0]["value"] is None
    day = _get(client, "/v1/metrics/revenue", start=iso(DAY), end=iso(DAY + 86400), granularity="day")
    assert [(p["value"], p["source"]) for p in day["points"]] == [(105.0, "mixed")]


def test_users_trending_and_active(client: TestClient) -> None:
    assert _get(client, "/v1/users/u1/recent")["products"] == ["B", "A"]
    profile = _get(client, "/v1/users/u1/profile")
    assert profile["total_events"] == 9.0
    assert profile["events_by_type"] == {
        "page_view": 4.0,
        "product_view": 2.0,
        "add_to_cart": 1.0,
        "purchase": 2.0,
    }
    assert (profile["orders"], profile["lifetime_value"], profile["average_order_value"]) == (2.0, 15.0, 7.5)
    assert profile["last_activity"] == iso(H3 + 40 * 60 + 7)
    assert profile["source"] == "speed"
    recommended = _get(client, "/v1/users/u1/recommendations")
    assert recommended["based_on"] == ["B", "A"]
    assert recommended["items"] == [{"product_id": "C", "score": 1.0}]
    trending = _get(client, "/v1/trending", window="15m")
    assert (trending["source"], trending["window"], trending["items"]) == (
        "speed",
        "15m",
        [],
    )  # all data is old
    active = _get(client, "/v1/active-users")
    assert set(active["now"]) == {"5m", "1h", "1d", "30d"}
    assert active["now"]["30d"] >= 5.0  # u1..u5 viewed pages or products yesterday (u9 bought)
    assert active["approximate"] is True


def test_alerts_and_funnel(client: TestClient) -> None:
    alerts = _get(client, "/v1/alerts")["alerts"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["type"], alert["user_id"], alert["amount"]) == ("high_value_purchase", "u9", 1500.0)
    assert alert["ts"] == iso(H4 + 10 * 60 + 7)
    assert _get(client, "/v1/alerts", since=iso(time.time() + 3600))["alerts"] == []
    funnel = _get(client, "/v1/funnel", start=iso(H1), end=iso(H4 + 3600))
    assert funnel["steps"] == [
        {"step": "product_view", "count": 1.0 + 2.0},  # batch H1 = 1 (H2: batch has none), speed H3 = 2
        {"step": "add_to_cart", "count": 2.0},
        {"step": "checkout_started", "count": 0.0},
        {"step": "purchase", "count": 10.0 + 1.0},  # batch H1 = 10, speed H3 = 1 (u9's went to alerts only)
    ]
    assert funnel["sources"] == ["batch", "speed"]


def test_drift_equals_the_hand_computed_differences(client: TestClient) -> None:
    body = _get(client, "/v1/drift", start=iso(H0), end=iso(H4))
    assert body["threshold"] == 0.02
    rows = {(r["metric"], r["hour"]): r for r in body["rows"]}
    assert {h for _, h in rows} == {iso(H1), iso(H2)}  # every published hour, nothing else

    def row(metric: str, hour: int) -> tuple[Any, ...]:
        r = rows[(metric, iso(hour))]
        return r["batch"], r["speed"], r["abs_diff"], r["rel_diff"], r["over_threshold"]

    assert row("page_views", H1) == (20.0, 2.0, 18.0, pytest.approx(0.9), True)
    assert row("page_views", H2) == (30.0, 3.0, 27.0, pytest.approx(0.9), True)
    assert row("product_views", H1) == (1.0, 1.0, 0.0, 0.0, False)
    assert row("revenue", H1) == (100.0, 10.0, 90.0, pytest.approx(0.9), True)
    assert row("unique_pages", H2) == (None, 2.0, 2.0, None, True)  # batch saw nothing, speed 2 paths
    assert row("orders", H2) == (None, None, None, None, False)  # nothing to compare
    assert row("cart_abandonment_rate", H1) == (pytest.approx(0.75), None, None, None, False)
    only = _get(client, "/v1/drift", start=iso(H0), end=iso(H4), metric="revenue")["rows"]
    assert {r["metric"] for r in only} == {"revenue"}


def test_drift_is_exported_to_prometheus(client: TestClient) -> None:
    client.app.state.serving.update_drift(H0, H4)  # what the maintenance thread runs (over the lookback)
    text = client.get("/metrics").text
    assert 'lambdalake_serving_drift_relative{metric="page_views"} 0.9' in text  # the latest hour, H2
    assert 'lambdalake_serving_drift_absolute{metric="page_views"} 27.0' in text
    assert 'lambdalake_serving_drift_hours_over_threshold{metric="page_views"} 2.0' in text
    # product_views: H2 has 2 speed views (u5) and no batch row: relatively infinite
    assert 'lambdalake_serving_drift_relative{metric="product_views"} +Inf' in text
    assert 'lambdalake_serving_drift_relative{metric="revenue"} 0.9' in text
    assert 'lambdalake_serving_requests_total{route="/v1/metrics/{name}",status="200"}' in text


def test_status(client: TestClient) -> None:
    body = _get(client, "/v1/status")
    assert body["redis"] == {"ok": True, "error": None}
    assert body["warehouse"] == {"ok": True, "error": None}
    assert body["watermark"] == iso(H2)


def test_engines_down_degrade_with_200(settings: Settings) -> None:
    no_redis = TestClient(create_app(settings.model_copy(update={"redis_port": free_port()})))
    body = _get(no_redis, "/v1/metrics/page_views", start=iso(H1), end=iso(H4))
    assert [p["source"] for p in body["points"]] == ["batch", "batch", "unavailable"]
    assert body["degraded"][0].startswith("redis unavailable")
    for path in ("/v1/trending", "/v1/users/u1/recent", "/v1/users/u1/recommendations", "/v1/active-users"):
        assert _get(no_redis, path)["source"] == "unavailable"
    assert _get(no_redis, "/v1/alerts")["alerts"] == []
    profile = _get(no_redis, "/v1/users/u1/profile")
    assert (profile["total_events"], profile["source"]) == (50.0, "batch")
    status = _get(no_redis, "/v1/status")
    assert status["redis"]["ok"] is False
    assert status["redis"]["error"].startswith("redis unavailable")

    no_warehouse = TestClient(create_app(settings.model_copy(update={"warehouse_port": free_port()})))
    body = _get(no_warehouse, "/v1/metrics/page_views", start=iso(H1), end=iso(H4))
    assert [(p["value"], p["source"]) for p in body["points"]] == [
        (2.0, "speed"),
        (3.0, "speed"),
        (4.0, "speed"),
    ]
    assert body["watermark"] is None
    assert body["degraded"][0].startswith("warehouse unavailable")
    assert _get(no_warehouse, "/v1/drift")["rows"] == []
    assert _get(no_warehouse, "/v1/users/u1/profile")["total_events"] == 9.0
    assert _get(no_warehouse, "/v1/status")["warehouse"]["ok"] is False
    assert no_warehouse.get("/metrics").status_code == 200
    for c in (no_redis, no_warehouse):
        c.app.state.serving.stop()


def test_lambdalake_serve_runs_as_a_child_process(settings: Settings) -> None:
    import httpx

    from serving.process import ServingProcess

    with ServingProcess(settings) as process:
        status = httpx.get(f"{process.url}/v1/status", headers=KEY, timeout=30).json()
        assert status["watermark"] == iso(H2)
        body = httpx.get(
            f"{process.url}/v1/metrics/page_views",
            params={"start": iso(H1), "end": iso(H4)},
            headers={"Authorization": "Bearer local-read-key"},
            timeout=30,
        ).json()
        assert [p["source"] for p in body["points"]] == ["batch", "batch", "speed"]
        assert process.dashboard_url().endswith("/?key=local-read-key")
    assert process.proc is not None
    assert process.proc.returncode is not None  # stopped
