"""The browser tracker in real headless Chromium against the real collector and kinesalite.

A page served from another 127.0.0.1 origin loads ``/tracker.js`` from the collector, and the test
drives Chromium over the DevTools protocol (websockets, no extra dependency): events sent by
fetch arrive once each; events pending when the page is left arrive by ``sendBeacon``; events
tracked while offline stay in localStorage and arrive on the next visit.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from lambdalake.local.process import end_group
from lambdalake.settings import Settings
from tests.conftest import free_port
from tests.integration.test_producer_collector import running_collector, wait_for_stream

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = Path(__file__).parent / "pages"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
BROWSER_START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 20.0


class Page:
    """One Chromium tab over the DevTools protocol: just the calls these tests need."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:  # anything else is an event we did not subscribe to use
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")
        ready = self.wait_for("window.__ready || window.__error")
        assert ready is True, f"test page did not start: {self.evaluate('window.__error')}"

    def offline(self, offline: bool) -> None:
        self.call(
            "Network.emulateNetworkConditions",
            offline=offline,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


@pytest.fixture(scope="module")
def browser() -> Iterator[str]:
    """Headless Chromium on a free DevTools port; yields its HTTP endpoint, stops it by pid."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: the project set-up must install Debian's `chromium`")
    profile = Path(tempfile.mkdtemp(prefix="lambdalake-chromium-"))
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(profile)},  # its org.chromium.Chromium.* dirs go with the profile
        start_new_session=True,  # its helpers too: they wrote into the profile after it was removed
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + BROWSER_START_TIMEOUT_S
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        end_group(process.pid, grace_s=10)  # Chromium and its helpers: SIGTERM, SIGKILL after 10 s
        process.wait(timeout=5)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: str) -> Iterator[Page]:
    target = httpx.put(f"{browser}/json/new?about:blank", timeout=10).json()
    try:
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            tab = Page(ws)
            tab.call("Page.enable")
            tab.call("Network.enable")
            yield tab
    finally:
        httpx.get(f"{browser}/json/close/{target['id']}", timeout=10)


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The test pages on their own 127.0.0.1 origin, so the tracker works cross-origin as in real life."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(PAGES)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def collector(engines: Settings) -> Iterator[Settings]:
    with running_collector(engines) as settings:
        yield settings


def page_url(site: str, collector: Settings, mode: str, run: str, n: int = 3) -> str:
    query = {
        "collector": f"http://127.0.0.1:{collector.collector_port}",
        "key": collector.write_keys[0],
        "prefix": f"test-{run}",
        "run": run,
        "mode": mode,
        "n": n,
    }
    return f"{site}/tracker.html?{urlencode(query)}"


def events_of(collector: Settings, run: str, count: int) -> list[dict[str, Any]]:
    def mine(record: dict[str, Any]) -> bool:
        props = record.get("properties") or {}
        return props.get("run") == run or (props.get("traits") or {}).get("run") == run

    return wait_for_stream(collector, collector.stream_name, mine, count)


def test_events_arrive_once_with_ids_sessions_and_identity(
    page: Page, site: str, collector: Settings
) -> None:
    run = uuid.uuid4().hex
    page.open(page_url(site, collector, "track", run, n=12))
    assert page.wait_for("lambdalake.flush().then(() => lambdalake.stats().pending === 0)") is True
    info = page.evaluate(
        "({anon: lambdalake.anonymousId(), session: lambdalake.sessionId(), stats: lambdalake.stats()})"
    )
    page.evaluate(
        "document.getElementById('status').textContent = JSON.stringify(lambdalake.stats(), null, 2)"
    )
    page.screenshot(OUTPUT / "tracker-browser.png")

    events = events_of(collector, run, 14)
    assert len(events) == 14  # page_view + 12 searches + identify
    assert len({e["event_id"] for e in events}) == 14
    assert info["stats"]["accepted"] == 14
    assert info["stats"]["rejected"] == info["stats"]["dropped"] == 0
    assert {e["anonymous_id"] for e in events} == {info["anon"]}
    assert {e["session_id"] for e in events} == {info["session"]}
    assert all(uuid.UUID(e["event_id"]).version == 4 for e in events)
    assert all(e["ts"].endswith("Z") for e in events)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["event_type"], []).append(event)
    assert sorted((t, len(v)) for t, v in by_type.items()) == [
        ("identify", 1),
        ("page_view", 1),
        ("search", 12),
    ]
    view = by_type["page_view"][0]
    assert view["properties"]["url"].startswith(f"{site}/tracker.html?")
    assert view["context"]["library"]["name"] == "lambdalake.js"
    assert "HeadlessChrome" in view["context"]["user_agent"]
    assert by_type["identify"][0]["user_id"] == f"user-{run}"
    assert by_type["identify"][0]["properties"]["traits"]["plan"] == "pro"


def test_pending_events_leave_by_beacon_when_the_page_is_hidden(
    page: Page, site: str, collector: Settings
) -> None:
    run = uuid.uuid4().hex
    page.open(page_url(site, collector, "hold", run, n=3))  # 4 events, under the batch size of 5
    assert page.evaluate("lambdalake.stats().pending") == 4  # held: nothing sent by timer
    assert page.evaluate("lambdalake.stats().sent") == 0
    page.call("Page.navigate", url="about:blank")  # pagehide -> sendBeacon(...?writeKey=...)
    events = events_of(collector, run, 4)
    assert len(events) == 4
    assert len({e["event_id"] for e in events}) == 4


def test_offline_events_wait_in_storage_until_back_online(page: Page, site: str, collector: Settings) -> None:
    run = uuid.uuid4().hex
    page.open(page_url(site, collector, "hold", run, n=2))
    page.offline(True)
    assert page.evaluate("navigator.onLine") is False
    assert page.evaluate("lambdalake.flush()") is False  # offline: nothing sent, nothing lost
    assert page.evaluate(f"JSON.parse(localStorage.getItem('test-{run}.queue')).length") == 3
    time.sleep(0.5)
    assert events_of(collector, run, 0) == []
    page.offline(False)  # the "online" event sends them
    assert page.wait_for("lambdalake.stats().pending === 0 && lambdalake.stats().accepted === 3") is True
    events = events_of(collector, run, 3)
    assert len(events) == 3
    assert len({e["event_id"] for e in events}) == 3
    assert page.evaluate(f"localStorage.getItem('test-{run}.queue')") is None


def test_events_a_failing_collector_did_not_take_are_sent_on_the_next_visit(
    page: Page, site: str, collector: Settings
) -> None:
    run = uuid.uuid4().hex
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    page.open(page_url(site, collector, "track", run, n=2) + f"&endpoint={quote(dead)}")
    assert page.wait_for("lambdalake.stats().failures >= 1") is True
    assert page.evaluate("lambdalake.stats().pending") == 4  # page_view, 2 searches, identify
    page.call("Page.navigate", url="about:blank")  # failing: no beacon, the events stay stored
    page.wait_for("location.href === 'about:blank'")
    page.open(page_url(site, collector, "resume", run))  # a later visit, tracking nothing new
    assert page.wait_for("lambdalake.stats().pending === 0 && lambdalake.stats().accepted === 4") is True
    events = events_of(collector, run, 4)
    assert len(events) == 4
    assert len({e["event_id"] for e in events}) == 4
    assert {e["event_type"] for e in events} == {"page_view", "search", "identify"}


def test_session_rotates_after_thirty_idle_minutes(page: Page, site: str, collector: Settings) -> None:
    run = uuid.uuid4().hex
    page.open(page_url(site, collector, "resume", run))
    first = page.evaluate("lambdalake.sessionId()")
    assert page.evaluate("lambdalake.sessionId()") == first  # activity keeps the session
    key = f"test-{run}.session"
    idle = f"""(() => {{
        const s = JSON.parse(localStorage.getItem('{key}'));
        s.last -= {{minutes}} * 60 * 1000;
        localStorage.setItem('{key}', JSON.stringify(s));
    }})()"""
    page.evaluate(idle.replace("{minutes}", "29"))
    assert page.evaluate("lambdalake.sessionId()") == first
    page.evaluate(idle.replace("{minutes}", "31"))
    second = page.evaluate("lambdalake.sessionId()")
    assert second != first
    assert uuid.UUID(second).version == 4
    anonymous = page.evaluate("lambdalake.anonymousId()")
    page.open(page_url(site, collector, "resume", run))  # a reload keeps both
    assert page.evaluate("lambdalake.anonymousId()") == anonymous
    assert page.evaluate("lambdalake.sessionId()") == second
