"""The live dashboard in real headless Chromium against the real serving API and real engines.

Speed views are filled by the speed layer's own processors (views, alerts) from hand-made events of
the last minutes; one past hour is published by batch (rows in ``agg_metrics_hourly_v1`` and the
watermark). The API runs in uvicorn on a free 127.0.0.1 port; the page is opened at ``/?key=...``
over the DevTools protocol (the helpers of the tracker's browser test). The numbers the page shows
must equal the API's answers; a screenshot is saved to ``test-output/dashboard.png``.

The events sit a few minutes before the test starts and every window checked spans at least 15
minutes, so the values cannot move while the test runs; the page and the API are still compared
until they agree (a refresh may be in flight), and then against the values the events imply.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_lib
import uvicorn

from batch.watermark import Watermark
from lambdalake.consumer.processor import BatchContext
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from speed_layer.alerts import AlertsProcessor
from speed_layer.metrics import SpeedMetrics
from speed_layer.views import ViewsProcessor
from tests.conftest import free_port
from tests.integration.test_speed_views import speed_settings
from tests.integration.test_tracker_browser import OUTPUT, Page, browser, page  # noqa: F401 (fixtures)
from warehouse.query import warehouse_loader

pytestmark = pytest.mark.integration

SERVER_START_TIMEOUT_S = 60.0
DATA_TIMEOUT_S = 90.0  # the first answers, on a loaded machine (every API call has its own timeouts)
READ_KEY = "dashboard-test-key"
BATCH_REVENUE = 1234.5
USERS = ["u-a", "u-b", "u-c"]
TOP_PRODUCT = "P-top"

MINUTE = 60


@dataclass(frozen=True)
class Scene:
    """When the test's data sit, fixed when the module's fixture runs (not at import)."""

    now: int

    @property
    def event_minute(self) -> int:  # a whole minute, two before this one
        return self.now // MINUTE * MINUTE - 2 * MINUTE

    @property
    def speed_hour(self) -> int:
        return self.event_minute // 3600 * 3600

    @property
    def batch_hour(self) -> int:  # the published hour: revenue from the warehouse
        return self.now // 3600 * 3600 - 3 * 3600


def iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def events(scene: Scene) -> list[dict[str, Any]]:
    """3 users, 5 page views in one minute, P-top viewed most, a cart, a checkout, one big order."""

    def event(kind: str, user: str, second: int, **properties: Any) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "event_type": kind,
            "user_id": user,
            "session_id": f"s-{user}",
            "ts": datetime.fromtimestamp(scene.event_minute + second, UTC).isoformat(),
            "properties": properties,
            "context": {},
        }

    out = [event("page_view", user, i, path=f"/{i}") for i, user in enumerate([*USERS, "u-a", "u-b"])]
    for i, product in enumerate([TOP_PRODUCT, TOP_PRODUCT, TOP_PRODUCT, "P-other"]):
        out.append(event("product_view", USERS[i % 3], 10 + i, product_id=product, category="toys"))
    out.append(event("add_to_cart", "u-a", 20, product_id=TOP_PRODUCT, quantity=2, price=700.0, cart_id="c1"))
    out.append(event("checkout_started", "u-a", 21, cart_id="c1", amount=1400.0))
    items = [{"product_id": TOP_PRODUCT, "quantity": 2, "price": 700.0, "category": "toys"}]
    out.append(event("purchase", "u-a", 22, order_id="o1", amount=1400.0, currency="USD", items=items))
    return out


def fill_speed_views(settings: Settings, scene: Scene) -> None:
    """The events through the speed layer's views and alerts processors, as their consumers would."""
    client = redis_lib.Redis.from_url(settings.redis_url)
    records = [
        StreamRecord("shard-1", str(100 + i), e["user_id"], orjson.dumps(e), float(scene.now))
        for i, e in enumerate(events(scene))
    ]
    try:
        for processor in (
            ViewsProcessor(settings, client, SpeedMetrics()),
            AlertsProcessor(settings, client, SpeedMetrics()),
        ):
            ctx = BatchContext(processor.group, settings.stream_name, "shard-1", "w", 1, 0, 1)
            processor.process_records(records, ctx)
    finally:
        client.close()


def publish_batch_hour(settings: Settings, scene: Scene) -> None:
    """Revenue of one past hour as the batch layer loads it, then that hour marked published."""
    loader = warehouse_loader(settings)
    loader.ensure_schema()
    with loader.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "INSERT INTO agg_metrics_hourly_v1"
            " (metric, metric_window, bucket_start, metric_key, item, item_rank, value)"
            " VALUES ('revenue', '1h', %s, '[]', NULL, NULL, %s)",
            (datetime.fromtimestamp(scene.batch_hour, UTC).replace(tzinfo=None), BATCH_REVENUE),
        )
        conn.commit()
    Watermark(settings).mark_published(datetime.fromtimestamp(scene.batch_hour, UTC), 1)


@contextmanager
def running_api(settings: Settings) -> Iterator[str]:
    """The real serving app (API and dashboard) in uvicorn on a free port, in a thread."""
    from serving.api import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=settings.serving_port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the serving API did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{settings.serving_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def serving(engines: Settings) -> Iterator[tuple[str, Scene]]:
    """Own Redis key prefix and warehouse schemas: nothing shared with other tests."""
    run = uuid.uuid4().hex[:8]
    settings = speed_settings(
        engines,
        speed_validate_events=False,
        allowed_lateness_s=3600,
        alert_high_value_amount=1000.0,
        warehouse_schema=f"dash_{run}",
        batch_meta_schema=f"dash_meta_{run}",
        read_keys=[READ_KEY],
        serving_port=free_port(),
    )
    scene = Scene(int(time.time()))
    fill_speed_views(settings, scene)
    publish_batch_hour(settings, scene)
    with running_api(settings) as base:
        yield base, scene


def api(base: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{base}{path}", params=params, headers={"X-Read-Key": READ_KEY}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def shown(page: Page, testid: str) -> dict[str, Any] | None:  # noqa: F811 (the fixture's name)
    """What the page shows under a data-testid: its text, the raw value it was given, its row's source."""
    return page.evaluate(
        f"""(() => {{
            const node = document.querySelector('[data-testid="{testid}"]');
            const row = node && node.closest('tr');
            return node && {{text: node.textContent, value: node.dataset.value ?? null,
                             source: row ? row.dataset.source : null}};
        }})()"""
    )


def text(page: Page, testid: str) -> str | None:  # noqa: F811
    node = shown(page, testid)
    return None if node is None else str(node["text"])


def number(page: Page, testid: str) -> float | str | None:  # noqa: F811
    """The number shown under a data-testid, read from its text (its raw value must say the same);
    a string while there is none yet ("missing", "…")."""
    node = shown(page, testid)
    if node is None:
        return "missing"
    shown_text = str(node["text"]).replace(",", "")
    if shown_text == "—":  # the API said null
        assert node["value"] == ""
        return None
    try:
        value = float(shown_text)
    except ValueError:
        return shown_text
    assert float(node["value"]) == pytest.approx(value, abs=0.006), node
    return value


def agree(read_page: Callable[[], Any], read_api: Callable[[], Any]) -> tuple[Any, Any]:
    """Page and API until they agree (a refresh may be in flight); the last of both otherwise."""
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        on_page, from_api = read_page(), read_api()
        if on_page == from_api or time.monotonic() > deadline:
            return on_page, from_api
        time.sleep(0.5)


def open_dashboard(page: Page, base: str) -> None:  # noqa: F811
    page.call(
        "Emulation.setDeviceMetricsOverride", width=1280, height=1500, deviceScaleFactor=1, mobile=False
    )
    page.open(f"{base}/?key={READ_KEY}")
    assert page.wait_for("window.dashboard.refreshes >= 1", timeout_s=DATA_TIMEOUT_S) is True


def hour_range() -> dict[str, str]:
    """The range the page asks for revenue: the last 24 hours, this one included."""
    hour = int(time.time()) // 3600 * 3600
    return {"start": iso(hour - 23 * 3600), "end": iso(hour + 3600), "granularity": "hour"}


def minute_range() -> dict[str, str]:
    """The range the page asks for page views: the last 60 minutes, this one included."""
    minute = int(time.time()) // MINUTE * MINUTE
    return {"start": iso(minute - 59 * MINUTE), "end": iso(minute + MINUTE), "granularity": "minute"}


def point(series: dict[str, Any], start: int) -> dict[str, Any] | None:
    return next((p for p in series["points"] if p["start"] == iso(start)), None)


def test_the_dashboard_shows_the_apis_numbers(page: Page, serving: tuple[str, Scene]) -> None:  # noqa: F811
    base, scene = serving
    open_dashboard(page, base)
    assert page.evaluate("localStorage.getItem('lambdalake.readKey')") == READ_KEY
    assert READ_KEY not in page.evaluate("location.href")  # the key leaves the address bar

    # active users now
    spans = ("5m", "1h", "1d")
    on_page, from_api = agree(
        lambda: [number(page, f"active-users-{span}") for span in spans],
        lambda: [api(base, "/v1/active-users")["now"][span] for span in spans],
    )
    assert on_page == from_api
    assert from_api[1] == from_api[2] == len(USERS)  # HyperLogLog is exact at this size

    # a page-views point: the minute of the events
    def page_views_from_api() -> Any:
        found = point(api(base, "/v1/metrics/page_views", **minute_range()), scene.event_minute)
        return found and found["value"]

    on_page, from_api = agree(
        lambda: number(page, f"page-views-{iso(scene.event_minute)}"), page_views_from_api
    )
    assert on_page == from_api == 5.0

    # revenue: the published hour from batch, the events' hour from speed, the boundary between them
    hours = (scene.batch_hour, scene.speed_hour)

    def revenue_on_page() -> list[Any]:
        return [
            (number(page, f"revenue-{iso(h)}"), (shown(page, f"revenue-{iso(h)}") or {}).get("source"))
            for h in hours
        ]

    def revenue_from_api() -> list[Any]:
        series = api(base, "/v1/metrics/revenue", **hour_range())
        return [(p["value"], p["source"]) if (p := point(series, h)) else None for h in hours]

    on_page, from_api = agree(revenue_on_page, revenue_from_api)
    assert on_page == from_api == [(BATCH_REVENUE, "batch"), (1400.0, "speed")]
    status = api(base, "/v1/status")
    assert status["watermark"] == iso(scene.batch_hour)
    assert (shown(page, "watermark") or {}).get("value") == status["watermark"]
    assert page.evaluate("window.dashboard.charts.revenue.boundary") == scene.batch_hour + 3600

    # top products (trending, 15 minutes): by views and by units purchased
    for by, score in (("views", 3.0), ("purchases", 2.0)):

        def top_from_api(by: str = by) -> list[Any]:
            items = api(base, "/v1/trending", window="15m", by=by, k=10)["items"]
            return [items[0]["product_id"], items[0]["score"]] if items else []

        on_page, from_api = agree(
            lambda by=by: [text(page, f"top-{by}-0-product"), number(page, f"top-{by}-0-score")],
            top_from_api,
        )
        assert on_page == from_api == [TOP_PRODUCT, score]

    # the funnel of today
    steps = ("product_view", "add_to_cart", "checkout_started", "purchase")

    def funnel_from_api() -> list[Any]:
        day = int(time.time()) // 86400 * 86400
        answer = api(base, "/v1/funnel", start=iso(day), end=iso(day + 86400))
        counts = {s["step"]: s["count"] for s in answer["steps"]}
        return [counts.get(step) for step in steps]

    on_page, from_api = agree(lambda: [number(page, f"funnel-{step}") for step in steps], funnel_from_api)
    assert on_page == from_api
    assert from_api[0] == 4.0  # product views of the events (no batch hour holds any today)

    # the alert feed, newest first
    def alert_from_api() -> list[Any]:
        alerts = api(base, "/v1/alerts", limit=20)["alerts"]
        return [alerts[0]["type"], alerts[0]["amount"]] if alerts else []

    on_page, from_api = agree(
        lambda: [text(page, "alert-0-type"), number(page, "alert-0-amount")], alert_from_api
    )
    assert on_page == from_api == ["high_value_purchase", 1400.0]

    assert page.evaluate("window.dashboard.vendorMissing") is False
    assert page.evaluate("document.querySelectorAll('#chart-revenue canvas').length") == 1
    assert page.evaluate("window.__error || null") is None
    page.screenshot(OUTPUT / "dashboard.png")


def test_without_the_chart_library_the_page_still_shows_the_numbers(
    page: Page,  # noqa: F811
    serving: tuple[str, Scene],
) -> None:
    base, scene = serving
    page.call("Network.setBlockedURLs", urls=["*/vendor/*"])  # as if node_modules lacked uplot
    open_dashboard(page, base)
    assert page.evaluate("window.dashboard.vendorMissing") is True
    assert page.evaluate("document.getElementById('vendor-missing').hidden") is False
    assert page.evaluate("document.getElementById('data-revenue').open") is True

    def revenue_from_api() -> Any:
        found = point(api(base, "/v1/metrics/revenue", **hour_range()), scene.batch_hour)
        return found and found["value"]

    on_page, from_api = agree(lambda: number(page, f"revenue-{iso(scene.batch_hour)}"), revenue_from_api)
    assert on_page == from_api == BATCH_REVENUE


def test_without_a_key_the_page_says_how_to_open_it(page: Page, serving: tuple[str, Scene]) -> None:  # noqa: F811
    base, _scene = serving
    page.open(f"{base}/")  # the browser remembers the key of the tests before: forget it
    page.evaluate("localStorage.removeItem('lambdalake.readKey')")
    page.open(f"{base}/")
    assert page.evaluate("document.getElementById('no-key').hidden") is False
    assert "?key=" in page.evaluate("document.getElementById('no-key').textContent")
    assert page.evaluate("window.dashboard.refreshes") == 0  # nothing asked without a key


def test_a_warehouse_that_is_down_shows_as_degraded(engines: Settings, page: Page) -> None:  # noqa: F811
    """Redis up, nothing on the warehouse's port: speed numbers still shown, the page says degraded."""
    settings = speed_settings(
        engines,
        speed_validate_events=False,
        allowed_lateness_s=3600,
        warehouse_port=free_port(),  # nothing listens there
        read_keys=[READ_KEY],
        serving_port=free_port(),
    )
    fill_speed_views(settings, Scene(int(time.time())))
    with running_api(settings) as base:
        open_dashboard(page, base)
        assert api(base, "/v1/metrics/revenue", **hour_range())["degraded"]
        assert page.wait_for("!document.getElementById('degraded').hidden", timeout_s=DATA_TIMEOUT_S) is True
        assert "warehouse" in page.evaluate("document.getElementById('degraded').textContent")
        on_page, from_api = agree(
            lambda: number(page, "active-users-1h"), lambda: api(base, "/v1/active-users")["now"]["1h"]
        )
        assert on_page == from_api == len(USERS)
        page.screenshot(OUTPUT / "dashboard-degraded.png")
