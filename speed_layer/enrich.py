"""The `enrich` consumer group: purchases joined with reference data and users' latest traits.

Two joins, both keyed:

- reference data, the lake's ``reference/`` zone (products and promos CSVs), held in memory and
  reloaded when a file changes (checked every ``enrich_reference_check_s``);
- a stream-to-stream join with ``identify`` events: each user's latest traits (by event time) are
  keyed state in Redis (``keys.traits``); a purchase is joined with the traits known when it is
  read (earlier in the same batch included).

Each purchase becomes one denormalised order record on the orders stream (``keys.orders``), for
the serving layer and the lake, written in the batch's one Lua call: at most once per event_id.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from lambdalake import lake
from lambdalake.settings import Settings
from speed_layer.apply import EffectivelyOnceProcessor, Lookups, encode_ops, prefetch_user_field
from speed_layer.metrics import SpeedMetrics
from speed_layer.records import ParsedRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    products: dict[str, dict[str, str]]
    promos: dict[str, dict[str, str]]
    version: tuple[Any, ...]  # (mtime, size) of each file: a change means reload


def _rows(data: bytes, key: str) -> dict[str, dict[str, str]]:
    return {row[key]: row for row in csv.DictReader(io.StringIO(data.decode()))}


class ReferenceData:
    """The reference CSVs, reloaded when they change; missing files give empty tables (logged)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uris = (
            lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS),
            lake.join(settings.lake_uri, lake.REFERENCE_PROMOS),
        )
        self._lock = threading.Lock()
        self._current = Reference({}, {}, ())
        self._checked = 0.0

    def _version(self) -> tuple[Any, ...]:
        version = []
        for uri in self.uris:
            filesystem, path = lake.filesystem(uri, self.settings)
            info = filesystem.get_file_info(path)
            version.append((info.mtime_ns, info.size) if info.size is not None else None)
        return tuple(version)

    def get(self) -> Reference:
        now = time.monotonic()
        if now - self._checked < self.settings.enrich_reference_check_s and self._current.version:
            return self._current
        with self._lock:
            self._checked = now
            version = self._version()
            if version != self._current.version:
                products_uri, promos_uri = self.uris
                products = (
                    _rows(lake.read_bytes(products_uri, self.settings), "product_id") if version[0] else {}
                )
                promos = _rows(lake.read_bytes(promos_uri, self.settings), "promo_code") if version[1] else {}
                if not products:
                    log.warning("enrich: no products reference at %s", products_uri)
                self._current = Reference(products, promos, version)
        return self._current


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class EnrichBatch:
    def __init__(self, processor: EnrichProcessor) -> None:
        self.p = processor
        self.reference = processor.reference.get()
        self.traits: dict[str, dict[str, Any]] = {}  # per user: loaded (``merge``), then updated here
        self.changed: set[str] = set()
        self.orders: list[dict[str, Any]] = []

    def merge(self, prefetched: dict[str, dict[str, Any] | None] | None) -> None:
        for user, traits in (prefetched or {}).items():
            if traits is not None:
                self.traits.setdefault(user, traits)  # one held already is newer

    def add(self, parsed: ParsedRecord, watermark: float) -> Collection[str]:
        event = parsed.event
        assert event is not None  # only valid records reach a builder
        user = event.get("user_id")
        kind = event.get("event_type")
        if kind == "identify" and user:
            traits = (event.get("properties") or {}).get("traits")
            known = self.traits.get(user)
            if isinstance(traits, dict) and (known is None or known["ts"] <= parsed.ts):
                self.traits[user] = {"ts": parsed.ts, "traits": traits}
                self.changed.add(user)
        elif kind == "purchase":
            self.orders.append(self._order(event, user))
        return ()

    def _order(self, event: dict[str, Any], user: str | None) -> dict[str, Any]:
        props = event.get("properties") or {}
        products, promos = self.reference.products, self.reference.promos
        promo = promos.get(props.get("promo_code") or "")
        items = []
        for item in props.get("items") or []:
            if not isinstance(item, dict):
                continue
            product = products.get(str(item.get("product_id")), {})
            items.append(
                {
                    "product_id": item.get("product_id"),
                    "quantity": item.get("quantity"),
                    "price": item.get("price"),
                    "category": item.get("category") or product.get("category"),
                    "name": product.get("name"),
                    "brand": product.get("brand"),
                    "list_price": _float(product.get("price")),
                    "known_product": bool(product),
                }
            )
        context = event.get("context") or {}
        return {
            "event_id": event["event_id"],
            "order_id": props.get("order_id"),
            "user_id": user,
            "anonymous_id": event.get("anonymous_id"),
            "session_id": event.get("session_id"),
            "ts": event.get("ts"),
            "amount": props.get("amount"),
            "currency": props.get("currency"),
            "payment_method": props.get("payment_method"),
            "promo_code": props.get("promo_code"),
            "promo_discount_pct": _float(promo.get("discount_pct")) if promo else None,
            "promo_category": (promo.get("category") or None) if promo else None,
            "items": items,
            "country": context.get("country"),
            "device": context.get("device"),
            "traits": (self.traits.get(user) or {}).get("traits") if user else None,
        }

    def drain(self) -> tuple[list[Any], int]:
        keys, settings = self.p.keys, self.p.settings
        ops: list[list[Any]] = [
            [
                "hset",
                keys.traits(u),
                -settings.enrich_traits_ttl_s,
                "t",
                orjson.dumps(self.traits[u]).decode(),
            ]
            for u in sorted(self.changed)
        ]
        for order in self.orders:
            ops.append(
                [
                    "xadd",
                    keys.orders,
                    0,
                    settings.enrich_stream_maxlen,
                    "event_id",
                    order["event_id"],
                    "order",
                    orjson.dumps(order).decode(),
                ]
            )
        written = len(self.orders)
        self.orders, self.changed = [], set()
        # a pipelined flow keeps its builder for many batches: take a changed file from the next chunk
        self.reference = self.p.reference.get()
        return encode_ops(ops), written


class EnrichProcessor(EffectivelyOnceProcessor):
    group = "enrich"
    event_types = frozenset({"purchase", "identify"})  # orders, and the traits they carry

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        metrics: SpeedMetrics,
        stream: str | None = None,
        shared: ReferenceData | None = None,
    ) -> None:
        super().__init__(settings, redis, metrics, stream)
        self.reference = shared or ReferenceData(settings)

    @classmethod
    def shared_state(cls, settings: Settings, redis: Any, metrics: SpeedMetrics) -> ReferenceData:
        return ReferenceData(settings)

    def builder(self) -> EnrichBatch:
        return EnrichBatch(self)

    def prefetch(self, chunk: list[ParsedRecord], lookups: Lookups) -> Callable[[list[Any]], Any] | None:
        """Each user's latest traits (from ``identify`` events)."""
        return prefetch_user_field(chunk, lookups, self.keys.traits, "t")

    def committed(self, note: Any) -> None:
        self.metrics.orders.inc(note)
