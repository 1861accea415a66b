"""The `alerts` consumer group: high-value purchases and a rule-based fraud score, at most once each.

Keyed state per user (``keys.alert_user``) holds what the rules need: orders and spend so far,
the times of recent purchases, and the countries of the latest two sessions. A purchase raises
one alert when it is high-value (``alert_high_value_amount``) or when the weights of the fraud
rules that fired reach ``alert_fraud_min_score``:

- ``amount_over_average``: amount over ``alert_fraud_amount_multiple`` × the user's average order;
- ``purchase_velocity``: more than ``alert_fraud_max_purchases`` purchases within
  ``alert_fraud_velocity_window_s`` (event time);
- ``country_change``: the session's country differs from the user's previous session's.

State and alerts are written in the batch's one Lua call (``apply.py``), so a replay or a zombie
never raises an alert twice. The alert stream is the outbox of the webhook: ``WebhookSender``
POSTs each alert after it is durable, with retries, remembering how far it got in Redis, so a
restart resends at most the alert in flight (receivers dedupe on the ``Idempotency-Key`` header).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

import orjson

from lambdalake.settings import Settings
from speed_layer.apply import EffectivelyOnceProcessor, Lookups, encode_ops, prefetch_user_field
from speed_layer.keys import ALERT_STATE_TTL_S, SpeedKeys
from speed_layer.metrics import SpeedMetrics
from speed_layer.records import ParsedRecord

log = logging.getLogger(__name__)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class AlertsBatch:
    def __init__(self, processor: AlertsProcessor) -> None:
        self.p = processor
        self.state: dict[str, dict[str, Any]] = {}  # per user: loaded (``merge``), then updated here
        self.touched: set[str] = set()
        self.alerts: list[dict[str, Any]] = []

    def merge(self, prefetched: dict[str, dict[str, Any] | None] | None) -> None:
        for user, state in (prefetched or {}).items():
            self.state.setdefault(user, state or {})  # one held already is newer

    @staticmethod
    def _user(parsed: ParsedRecord) -> str | None:
        event = parsed.event or {}
        return event.get("user_id")

    def add(self, parsed: ParsedRecord, watermark: float) -> Collection[str]:
        event = parsed.event
        assert event is not None  # only valid records reach a builder
        user = event.get("user_id")
        if not user:
            return ()
        state = self.state.setdefault(user, {})
        context = event.get("context") or {}
        session, country = event.get("session_id"), context.get("country")
        if session and country and session != state.get("session"):
            state["previous_country"] = state.get("country")
            state["session"], state["country"] = session, country
            self.touched.add(user)
        if event.get("event_type") == "purchase":
            self._purchase(user, state, event, parsed.ts)
        return ()

    def _purchase(self, user: str, state: dict[str, Any], event: dict[str, Any], ts: float) -> None:
        settings = self.p.settings
        amount = _number((event.get("properties") or {}).get("amount"))
        if amount is None:
            return
        self.touched.add(user)
        orders, spent = int(state.get("orders", 0)), float(state.get("spent", 0.0))
        window = settings.alert_fraud_velocity_window_s
        recent = [t for t in state.get("recent", []) if ts - window < t <= ts] + [ts]
        reasons = []
        if orders and amount > settings.alert_fraud_amount_multiple * spent / orders:
            reasons.append("amount_over_average")
        if len(recent) > settings.alert_fraud_max_purchases:
            reasons.append("purchase_velocity")
        previous = state.get("previous_country")
        if previous and previous != state.get("country"):
            reasons.append("country_change")
        state.update(orders=orders + 1, spent=spent + amount, recent=sorted(recent)[-50:])
        score = round(sum(settings.alert_fraud_weights.get(r, 0.0) for r in reasons), 6)
        kinds = []
        if amount >= settings.alert_high_value_amount:
            kinds.append("high_value")
        if reasons and score >= settings.alert_fraud_min_score:
            kinds.append("fraud")
        if not kinds:
            return
        self.alerts.append(
            {
                "alert_id": event["event_id"],
                "kinds": kinds,
                "user_id": user,
                "order_id": (event.get("properties") or {}).get("order_id"),
                "amount": amount,
                "score": score,
                "reasons": reasons,
                "average_before": round(spent / orders, 2) if orders else None,
                "country": state.get("country"),
                "ts": event.get("ts"),
            }
        )

    def drain(self) -> tuple[list[Any], list[dict[str, Any]]]:
        keys = self.p.keys
        ops: list[list[Any]] = [
            ["hset", keys.alert_user(u), -ALERT_STATE_TTL_S, "s", orjson.dumps(self.state[u]).decode()]
            for u in sorted(self.touched)
        ]
        maxlen = self.p.settings.alert_stream_maxlen
        for alert in self.alerts:
            ops.append(
                [
                    "xadd",
                    keys.alerts,
                    0,
                    maxlen,
                    "alert_id",
                    alert["alert_id"],
                    "alert",
                    orjson.dumps(alert).decode(),
                ]
            )
        raised, self.alerts, self.touched = self.alerts, [], set()
        return encode_ops(ops), raised


class AlertsProcessor(EffectivelyOnceProcessor):
    group = "alerts"

    def builder(self) -> AlertsBatch:
        return AlertsBatch(self)

    def prefetch(self, chunk: list[ParsedRecord], lookups: Lookups) -> Callable[[list[Any]], Any] | None:
        """Each user's alert state (last session, country, recent purchases)."""
        return prefetch_user_field(chunk, lookups, self.keys.alert_user, "s")

    def committed(self, note: Any) -> None:
        for alert in note:
            for kind in alert["kinds"]:
                self.metrics.alerts.labels(kind).inc()

    @classmethod
    def background(cls, settings: Settings, redis: Any, metrics: SpeedMetrics) -> list[Any]:
        return [WebhookSender(settings, redis, metrics)] if settings.alert_webhook_url else []


class WebhookSender:
    """POSTs every alert of the alert stream to ``alert_webhook_url``, in order, at least once."""

    def __init__(self, settings: Settings, redis: Any, metrics: SpeedMetrics) -> None:
        self.settings = settings
        self.redis = redis
        self.metrics = metrics
        self.keys = SpeedKeys(settings.speed_key_prefix)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="alerts:webhook", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.settings.alert_webhook_timeout_s) as http:
            while not self._stop.is_set():
                try:
                    self.step(http, block_ms=500)
                except Exception:
                    log.exception("alert webhook: step failed; retrying")
                    self._stop.wait(1.0)

    def step(self, http: Any, block_ms: int = 0) -> int:
        """Send the alerts after the cursor; returns how many were delivered."""
        cursor = self.redis.hget(self.keys.webhook_cursor, "last_id") or b"0-0"
        rows = self.redis.xread({self.keys.alerts: cursor}, count=100, block=block_ms or None)
        sent = 0
        for _stream, entries in rows or []:
            for entry_id, fields in entries:
                if not self._post(http, fields[b"alert"], fields[b"alert_id"].decode()):
                    return sent
                self.redis.hset(self.keys.webhook_cursor, "last_id", entry_id)
                sent += 1
        return sent

    def _post(self, http: Any, body: bytes, alert_id: str) -> bool:
        url = self.settings.alert_webhook_url
        assert url is not None  # only started when configured
        for attempt in range(self.settings.alert_webhook_max_retries + 1):
            try:
                response = http.post(
                    url,
                    content=body,
                    headers={"content-type": "application/json", "idempotency-key": alert_id},
                )
                if response.status_code < 300:
                    self.metrics.webhook.labels("delivered").inc()
                    return True
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    log.error("alert webhook refused %s with %s: skipped", alert_id, response.status_code)
                    self.metrics.webhook.labels("refused").inc()
                    return True
            except Exception as exc:  # noqa: BLE001 - a network error is retried like a 5xx
                log.warning("alert webhook: %s", exc)
            self.metrics.webhook.labels("retried").inc()
            if self._stop.wait(min(10.0, 0.2 * 2**attempt)):
                return False
        self.metrics.webhook.labels("failed").inc()
        return False  # the cursor stays: the next step starts again from this alert
