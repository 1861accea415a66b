"""Answers only the speed layer has: trending now, a user's recent products, profile, recommendations,
active users and the alert feed. Each returns the API's JSON body; with Redis down, an empty
answer with ``source: unavailable`` and the reason in ``degraded`` (the profile falls back to the
batch layer's lifetime partials, see reconcile.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson

from serving.engines import EngineUnavailable
from serving.reconcile import (
    SPEED,
    UNAVAILABLE,
    Degraded,
    LifetimeValue,
    QueryError,
    Reconciler,
    combine_sources,
)
from serving.times import iso

TRENDING_BY = {"views": "trending_products_views", "purchases": "trending_products_purchases"}
RECENT_METRIC = "recently_viewed"
CO_VIEWED_METRIC = "co_viewed_products"
ACTIVE_USERS_METRIC = "active_users"
RECOMMEND_FROM = 5  # the user's latest products the recommendations start from
PROFILE_METRICS = {
    "total_events": "user_events",
    "orders": "user_orders",
    "lifetime_value": "user_lifetime_value",
    "average_order_value": "user_average_order_value",
    "last_activity": "user_last_activity",
}
EVENTS_BY_TYPE_METRIC = "user_events_by_type"
OTHER_TYPES = "other"


def contract_event_types() -> list[str]:
    """Event types with a JSON Schema in the contract (custom types are counted as ``other``)."""
    root = resources.files("lambdalake.schemas")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in ("envelope", "__pycache__"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SpeedAnswers:
    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler
        self.event_types = sorted({*contract_event_types(), *reconciler.settings.strict_event_types})

    # --- trending -------------------------------------------------------------------------------
    def trending(self, window: str, category: str | None, by: str, k: int) -> dict[str, Any]:
        if by not in TRENDING_BY:
            raise QueryError(f"by must be one of {', '.join(TRENDING_BY)}, not {by!r}")
        name = TRENDING_BY[by] + ("_by_category" if category is not None else "")
        metric = self.r.metric(name)
        if window not in metric.sliding:
            raise QueryError(
                f"window must be one of {', '.join(metric.sliding)} (the metric's sliding spans)"
            )
        key = [category] if category is not None else []
        body: dict[str, Any] = {"window": window, "category": category, "by": by, "as_of": iso(time.time())}
        try:
            items = self.r.redis.run(lambda _r: self.r.speed.query.top(name, key, span=window, k=k))
            body.update(source=SPEED, items=[{"product_id": i, "score": s} for i, s in items], degraded=[])
        except EngineUnavailable as exc:
            body.update(source=UNAVAILABLE, items=[], degraded=[str(exc)])
        return body

    # --- users ----------------------------------------------------------------------------------
    def recent(self, user_id: str, n: int) -> dict[str, Any]:
        try:
            products = self.r.redis.run(lambda _r: self.r.speed.query.recent(RECENT_METRIC, [user_id], n))
            return {"user_id": user_id, "products": products, "source": SPEED, "degraded": []}
        except EngineUnavailable as exc:
            return {"user_id": user_id, "products": [], "source": UNAVAILABLE, "degraded": [str(exc)]}

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """The user's lifetime figures; None when neither layer knows the user."""
        degraded = Degraded()
        values: dict[str, LifetimeValue] = {
            field: self.r.lifetime(name, [user_id], degraded) for field, name in PROFILE_METRICS.items()
        }
        by_type = self.r.lifetimes(EVENTS_BY_TYPE_METRIC, [(user_id, t) for t in self.event_types], degraded)
        if all(v.value is None for v in values.values()) and all(v.value is None for v in by_type.values()):
            if any(v.source == UNAVAILABLE for v in values.values()):
                return {"user_id": user_id, "source": UNAVAILABLE, "degraded": list(degraded)}
            return None
        events_by_type = {k[1]: v.value for k, v in by_type.items() if v.value is not None}
        total = values["total_events"].value
        known = sum(events_by_type.values())
        if total is not None and total > known:
            events_by_type[OTHER_TYPES] = total - known  # custom event types
        last = values["last_activity"].value
        return {
            "user_id": user_id,
            "total_events": total,
            "events_by_type": events_by_type,
            "last_activity": None if last is None else iso(last),
            "orders": values["orders"].value,
            "lifetime_value": values["lifetime_value"].value,
            "average_order_value": values["average_order_value"].value,
            "source": combine_sources(v.source for v in values.values()),
            "degraded": list(degraded),
        }

    def recommendations(self, user_id: str, k: int) -> dict[str, Any]:
        try:
            return self.r.redis.run(lambda _r: self._recommend(user_id, k))
        except EngineUnavailable as exc:
            return {
                "user_id": user_id,
                "based_on": [],
                "items": [],
                "source": UNAVAILABLE,
                "degraded": [str(exc)],
            }

    def _recommend(self, user_id: str, k: int) -> dict[str, Any]:
        query = self.r.speed.query
        viewed = query.recent(RECENT_METRIC, [user_id])
        based_on = viewed[:RECOMMEND_FROM]
        scores: dict[str, float] = {}
        for product in based_on:
            for item, score in query.related(CO_VIEWED_METRIC, product):
                if item not in viewed:
                    scores[item] = scores.get(item, 0.0) + score
        ranked = sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]
        return {
            "user_id": user_id,
            "based_on": based_on,
            "items": [{"product_id": i, "score": s} for i, s in ranked],
            "source": SPEED,
            "degraded": [],
        }

    # --- site-wide --------------------------------------------------------------------------------
    def active_users(self) -> dict[str, Any]:
        metric = self.r.metric(ACTIVE_USERS_METRIC)
        now = time.time()
        body: dict[str, Any] = {"approximate": True, "as_of": iso(now)}
        try:
            spans = self.r.redis.run(
                lambda _r: {
                    s: self.r.speed.query.sliding(metric.name, s, now=now) or 0.0 for s in metric.sliding
                }
            )
            body.update(now=spans, source=SPEED, degraded=[])
        except EngineUnavailable as exc:
            body.update(now={s: None for s in metric.sliding}, source=UNAVAILABLE, degraded=[str(exc)])
        return body

    def alerts(self, since: int | None, limit: int) -> dict[str, Any]:
        stream = self.r.speed.keys.alerts
        low = f"{since * 1000}-0" if since is not None else "-"
        try:
            entries = self.r.redis.run(lambda r: r.xrevrange(stream, "+", low, count=limit))
        except EngineUnavailable as exc:
            return {"alerts": [], "source": UNAVAILABLE, "degraded": [str(exc)]}
        return {"alerts": [alert_json(i, f) for i, f in entries], "source": SPEED, "degraded": []}


def alert_json(entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    """One alert stream entry (speed_layer/alerts.py) in the API's shape."""
    decoded = {_text(k): v for k, v in fields.items()}
    alert = orjson.loads(decoded.get("alert", b"{}"))
    kinds: Sequence[str] = alert.get("kinds") or []
    return {
        "id": _text(entry_id),
        "ts": _iso_ts(alert.get("ts")),
        "type": "fraud" if "fraud" in kinds else "high_value_purchase",
        "kinds": ["high_value_purchase" if k == "high_value" else k for k in kinds],
        "user_id": alert.get("user_id"),
        "event_id": alert.get("alert_id"),
        "order_id": alert.get("order_id"),
        "amount": alert.get("amount"),
        "score": alert.get("score"),
        "reasons": alert.get("reasons") or [],
    }


def _iso_ts(value: Any) -> str | None:
    if value is None:
        return None
    from serving.times import parse_time

    try:
        return iso(parse_time(str(value)))
    except ValueError:
        return str(value)
