"""Stagger windows through the serving layer: a user's windows that start in hours batch has
published come from batch, later ones from speed, each window once; engines down degrade the answer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from lambdalake.settings import Settings
from serving.api import create_app
from tests.conftest import free_port
from tests.integration.test_serving_reconcile import (
    H1,
    H2,
    H3,
    feed_speed,
    load_batch,
    publish,
    serving_settings,
)

pytestmark = pytest.mark.integration

METRIC = "user_page_views_stagger"
# page views of user s-user, each opening a window: H1 +5m, H2 +10m, H3 +1m (+7 s each)
EVENTS = [
    ("page_view", H1, 5, "s-user", "x1", {"path": "/a"}),
    ("page_view", H2, 10, "s-user", "x2", {"path": "/b"}),
    ("page_view", H3, 1, "s-user", "x3", {"path": "/c"}),
]


def _iso_us(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


@pytest.fixture(scope="module")
def settings(engines: Settings) -> Settings:
    settings = serving_settings(engines, warehouse_schema="test_serving_stagger")
    feed_speed(settings, EVENTS)
    # batch holds the H1 window with 10x the speed value, so each window shows where it came from
    load_batch(settings, [(METRIC, "stagger_1m", H1 + 5 * 60 + 7, ["s-user"], None, None, 10.0)])
    publish(settings, H1)
    return settings


def _windows(client: TestClient, **params: object) -> dict:
    response = client.get(
        f"/v1/metrics/{METRIC}/windows",
        params={"start": _iso_us(H1)[:19] + "Z", "end": _iso_us(H3 + 3600)[:19] + "Z", **params},
        headers={"X-Read-Key": "local-read-key"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_windows_in_published_hours_come_from_batch_the_rest_from_speed(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        body = _windows(client, key="s-user")
    assert body["window"] == "stagger_1m"
    assert body["degraded"] == []
    assert [(w["start"], w["value"], w["source"]) for w in body["windows"]] == [
        (_iso_us(H1 + 5 * 60 + 7), 10.0, "batch"),
        (_iso_us(H2 + 10 * 60 + 7), 1.0, "speed"),
        (_iso_us(H3 + 60 + 7), 1.0, "speed"),
    ]


def test_the_warehouse_down_answers_every_window_from_speed(settings: Settings) -> None:
    down = settings.model_copy(update={"warehouse_port": free_port()})
    with TestClient(create_app(down)) as client:
        body = _windows(client, key="s-user")
    assert [w["source"] for w in body["windows"]] == ["speed", "speed", "speed"]
    assert body["windows"][0]["value"] == 1.0
    assert len(body["degraded"]) == 1
    assert "warehouse" in body["degraded"][0]


def test_bad_requests_are_422_with_the_reason(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        headers = {"X-Read-Key": "local-read-key"}
        not_stagger = client.get("/v1/metrics/page_views/windows", headers=headers)
        assert not_stagger.status_code == 422
        assert "no stagger window" in not_stagger.text
        no_key = client.get(f"/v1/metrics/{METRIC}/windows", headers=headers)
        assert no_key.status_code == 422
        assert "key value" in no_key.text
        unknown = client.get("/v1/metrics/nope/windows", headers=headers)
        assert unknown.status_code == 404
