"""The alerts group on real Redis: rules fire with their reasons, at most once per purchase, and the
webhook gets every alert despite a failing first POST."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import orjson
import pytest
import redis as redis_lib

from lambdalake.consumer.processor import BatchContext
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from speed_layer.alerts import AlertsProcessor, WebhookSender
from speed_layer.keys import SpeedKeys
from speed_layer.metrics import SpeedMetrics
from tests.integration.test_speed_views import generated, in_memory_records, speed_settings

pytestmark = pytest.mark.integration


def _event(kind: str, minute: int, session: str, country: str, **properties: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "user_id": "u1",
        "session_id": session,
        "ts": f"2026-01-01T10:{minute:02d}:00Z",
        "properties": properties,
        "context": {"country": country},
    }


def _purchase(minute: int, amount: float, session: str = "s1", country: str = "US") -> dict[str, Any]:
    return _event(
        "purchase", minute, session, country, order_id=f"o{minute}", amount=amount, currency="USD", items=[]
    )


def _records(events: list[dict[str, Any]], first: int = 0) -> list[StreamRecord]:
    return [
        StreamRecord("shard-1", str(1000 + first + i), "u1", orjson.dumps(e), 1.0)
        for i, e in enumerate(events)
    ]


def _alerts(client: redis_lib.Redis, settings: Settings) -> list[dict[str, Any]]:
    rows = client.xrange(SpeedKeys(settings.speed_key_prefix).alerts)
    return [orjson.loads(fields[b"alert"]) for _, fields in rows]


def test_rules_fire_with_reasons_once_per_purchase(engines: Settings) -> None:
    # hand-written events carry only what the rules read: the light checks, not the full contract
    settings = speed_settings(engines, alert_high_value_amount=1000.0, speed_validate_events=False)
    client = redis_lib.Redis.from_url(settings.redis_url)
    events = [
        _purchase(0, 50.0),
        _purchase(20, 60.0),
        _purchase(40, 40.0),
        _purchase(59, 400.0),  # > 5 x average 50: amount rule (0.5)
        _event("page_view", 59, "s2", "BR", path="/"),
        _purchase(59, 45.0, "s2", "BR"),  # country change alone: 0.3 < min score 0.4, no alert
        _purchase(59, 1200.0, "s2", "BR"),  # high value, over average, country change
    ]
    processor = AlertsProcessor(settings, client, SpeedMetrics())
    ctx = BatchContext("alerts", processor.stream, "shard-1", "w", 1, 0, 1)
    records = _records(events)
    processor.process_records(records[:4], ctx)
    processor.process_records(records[2:], ctx)  # overlaps: a redelivery of two records
    alerts = _alerts(client, settings)
    assert [(a["order_id"], a["kinds"], a["reasons"]) for a in alerts] == [
        ("o59", ["fraud"], ["amount_over_average"]),
        ("o59", ["high_value", "fraud"], ["amount_over_average", "country_change"]),
    ]
    assert alerts[0]["alert_id"] == events[3]["event_id"]
    assert alerts[1]["score"] == pytest.approx(0.8)

    # velocity: a 4th, 5th purchase within ten minutes; a resend of one of them raises nothing more
    burst = [_purchase(m, 30.0 + m, "s2", "BR") for m in (59, 59)]
    processor.process_records(_records([*burst, burst[0]], first=len(events)), ctx)
    alerts = _alerts(client, settings)
    assert len(alerts) == 4
    assert all("purchase_velocity" in a["reasons"] for a in alerts[2:])
    # a replay of everything raises nothing new
    AlertsProcessor(settings, client, SpeedMetrics()).process_records(records, ctx)
    assert len(_alerts(client, settings)) == 4


def test_fraud_sessions_of_the_generator_raise_alerts_once(engines: Settings) -> None:
    settings = speed_settings(engines)
    client = redis_lib.Redis.from_url(settings.redis_url)
    emitted = generated(4000, seed=9, fraud_rate=0.03)
    processor = AlertsProcessor(settings, client, SpeedMetrics())
    for _ in range(2):  # the second pass is a full replay
        for shard, records in in_memory_records(emitted).items():
            ctx = BatchContext("alerts", processor.stream, shard, "w", 1, 0, 1)
            for start in range(0, len(records), 200):
                processor.process_records(records[start : start + 200], ctx)
    alerts = _alerts(client, settings)
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))
    fraud = [a for a in alerts if "fraud" in a["kinds"]]
    assert len(fraud) >= 5
    assert any("purchase_velocity" in a["reasons"] for a in fraud)
    purchases = {
        orjson.loads(e.line)["event_id"] for e in emitted if e.kind != "malformed" and b'"purchase"' in e.line
    }
    assert set(ids) <= purchases


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        body = self.rfile.read(int(self.headers["content-length"]))
        if type(self).calls == 1:
            self.send_response(503)
        else:
            type(self).received.append((self.headers["idempotency-key"], orjson.loads(body)))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_the_webhook_gets_every_alert_in_order_after_a_failed_post(engines: Settings) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        settings = speed_settings(
            engines, alert_webhook_url=url, alert_webhook_max_retries=3, speed_validate_events=False
        )
        client = redis_lib.Redis.from_url(settings.redis_url)
        processor = AlertsProcessor(settings, client, SpeedMetrics())
        ctx = BatchContext("alerts", processor.stream, "shard-1", "w", 1, 0, 1)
        processor.process_records(_records([_purchase(0, 1500.0), _purchase(1, 2500.0)]), ctx)
        sender = WebhookSender(settings, client, SpeedMetrics())
        with httpx.Client(timeout=5) as http:
            assert sender.step(http) == 2
            assert sender.step(http) == 0  # the cursor remembers: nothing is sent twice
        expected = [a["alert_id"] for a in _alerts(client, settings)]
        assert [key for key, _ in _Hook.received] == expected
        assert [body["amount"] for _, body in _Hook.received] == [1500.0, 2500.0]
        assert _Hook.calls == 3
    finally:
        server.shutdown()
