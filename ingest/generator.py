"""A realistic, deterministic e-commerce clickstream for demos, tests and benchmarks.

Users (country, device) run sessions that walk a funnel — page_view → product_view →
add_to_cart → checkout_started → purchase — with realistic drop-off, Zipf-skewed product
popularity, searches and identify calls. A small share of sessions look like fraud (bursts of
purchases, amounts far above the user's usual, a country change). Like real clients, the output
also carries duplicates (the same event resent), late events (event time minutes to hours behind
arrival), out-of-order events and malformed events, each at a configurable rate.

Lines come out in *arrival* order, one JSON event per line. Memory stays bounded whatever the
count: sessions are generated in start-time order and an event is emitted once no event still to
be generated can arrive before it (nothing generated later can arrive before its session starts).
The same seed and options give the same bytes.
"""

from __future__ import annotations

import csv
import functools
import heapq
import io
import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from lambdalake.settings import Settings

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
CATEGORIES: dict[str, tuple[float, float]] = {
    # category: (median price, spread of log-price)
    "electronics": (180.0, 0.8),
    "books": (18.0, 0.4),
    "home": (45.0, 0.7),
    "fashion": (55.0, 0.6),
    "sports": (60.0, 0.7),
    "beauty": (25.0, 0.5),
    "toys": (30.0, 0.6),
    "grocery": (8.0, 0.5),
}
COUNTRIES = (
    ("US", 0.35),
    ("GB", 0.12),
    ("DE", 0.11),
    ("FR", 0.09),
    ("IN", 0.09),
    ("BR", 0.08),
    ("JP", 0.06),
    ("ES", 0.05),
    ("CA", 0.05),
)
DEVICES = (("mobile", 0.58), ("desktop", 0.36), ("tablet", 0.06))
USER_AGENTS = {
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "desktop": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
}
ADJECTIVES = ("Classic", "Smart", "Eco", "Pro", "Ultra", "Compact", "Deluxe", "Vintage", "Urban", "Nordic")
NOUNS = {
    "electronics": ("Headphones", "Speaker", "Tablet", "Camera", "Monitor", "Keyboard"),
    "books": ("Novel", "Cookbook", "Atlas", "Biography", "Guide", "Anthology"),
    "home": ("Lamp", "Kettle", "Blanket", "Vase", "Chair", "Shelf"),
    "fashion": ("Jacket", "Sneakers", "Scarf", "Backpack", "Dress", "Watch"),
    "sports": ("Yoga Mat", "Bike Helmet", "Dumbbells", "Tent", "Ball", "Bottle"),
    "beauty": ("Serum", "Lipstick", "Shampoo", "Perfume", "Cream", "Brush"),
    "toys": ("Puzzle", "Robot", "Blocks", "Doll", "Kite", "Board Game"),
    "grocery": ("Coffee", "Tea", "Olive Oil", "Chocolate", "Honey", "Pasta"),
}
SEARCH_TERMS = ("wireless", "gift", "sale", "organic", "kids", "running", "summer", "black", "cheap", "best")
CURRENCY = "USD"
PAYMENT_METHODS = ("card", "card", "card", "paypal", "apple_pay", "gift_card")

Kind = Literal["normal", "duplicate", "late", "out_of_order", "malformed"]


@dataclass(frozen=True)
class GeneratorConfig:
    events: int
    seed: int = 42
    start: datetime = DEFAULT_START
    events_per_s: float = 20.0  # simulated traffic: sets how much event time the events span
    products: int = 200
    users: int | None = None  # default: about one user per 60 events
    duplicate_rate: float = 0.01
    late_rate: float = 0.01
    out_of_order_rate: float = 0.02
    malformed_rate: float = 0.005
    fraud_rate: float = 0.004  # share of sessions
    max_late_s: float = 3 * 3600.0

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events must be >= 0")
        for name in ("duplicate_rate", "late_rate", "out_of_order_rate", "malformed_rate", "fraud_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.events_per_s <= 0:
            raise ValueError("events_per_s must be > 0")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a timezone (UTC)")


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float
    brand: str


@dataclass(frozen=True)
class Promo:
    promo_code: str
    discount_pct: int
    category: str | None
    valid_from: str
    valid_to: str


@dataclass(frozen=True)
class User:
    user_id: str
    anonymous_id: str
    country: str
    device: str
    spend: float  # how much this user usually spends, as a price multiplier


@dataclass
class Emitted:
    """One output line with what the generator knows about it (the file itself carries no labels)."""

    arrival_ms: int
    order: int
    line: bytes = field(compare=False)
    kind: Kind = field(compare=False)
    event_id: str | None = field(compare=False)


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _ts(ms: int) -> str:
    return f"{_second(ms // 1000)}{ms % 1000:03d}Z"


def _weighted(rng: random.Random, pairs: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]


class ClickstreamGenerator:
    """Deterministic generator; iterate ``lines()`` (or ``emitted()`` for labelled lines)."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.products = self._make_products()
        self.promos = self._make_promos()
        self.users = self._make_users()
        # Zipf popularity: product rank r has weight 1 / r^1.1; users are skewed more gently.
        self._product_cum = list(
            itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(self.products)))
        )
        self._user_cum = list(itertools.accumulate(1.0 / (r + 1) ** 0.6 for r in range(len(self.users))))
        self._order = itertools.count()

    # --- reference data -----------------------------------------------------------------------
    def _make_products(self) -> list[Product]:
        rng = random.Random(self.config.seed * 7919 + 1)
        products = []
        categories = list(CATEGORIES)
        for i in range(self.config.products):
            category = categories[i % len(categories)]
            median, spread = CATEGORIES[category]
            price = round(max(0.99, median * math.exp(rng.gauss(0.0, spread))), 2)
            name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS[category])}"
            products.append(Product(f"P{i:05d}", name, category, price, f"brand-{rng.randrange(40):02d}"))
        rng.shuffle(products)  # popularity rank is independent of category
        return products

    def _make_promos(self) -> list[Promo]:
        start = self.config.start.date().isoformat()
        promos = [Promo("WELCOME10", 10, None, start, "2099-12-31")]
        for i, category in enumerate(CATEGORIES):
            promos.append(
                Promo(
                    f"{category.upper()}{15 + 5 * (i % 3)}", 15 + 5 * (i % 3), category, start, "2099-12-31"
                )
            )
        return promos

    def _make_users(self) -> list[User]:
        rng = random.Random(self.config.seed * 104729 + 2)
        count = self.config.users or max(20, self.config.events // 60)
        return [
            User(
                user_id=f"u{i:07d}",
                anonymous_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                country=_weighted(rng, COUNTRIES),
                device=_weighted(rng, DEVICES),
                spend=round(math.exp(rng.gauss(0.0, 0.35)), 3),
            )
            for i in range(count)
        ]

    def products_csv(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["product_id", "name", "category", "price", "brand"])
        for p in sorted(self.products, key=lambda p: p.product_id):
            writer.writerow([p.product_id, p.name, p.category, f"{p.price:.2f}", p.brand])
        return out.getvalue().encode()

    def promos_csv(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["promo_code", "discount_pct", "category", "valid_from", "valid_to"])
        for p in self.promos:
            writer.writerow([p.promo_code, p.discount_pct, p.category or "", p.valid_from, p.valid_to])
        return out.getvalue().encode()

    def write_reference(self, settings: Settings) -> None:
        """Products and promos in the lake's reference zone (what orders and enrichment join with)."""
        from lambdalake import lake

        files = ((lake.REFERENCE_PRODUCTS, self.products_csv()), (lake.REFERENCE_PROMOS, self.promos_csv()))
        for path, data in files:
            lake.write_bytes(lake.join(settings.lake_uri, path), data, settings)

    # --- events -------------------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _product(self) -> Product:
        return self.rng.choices(self.products, cum_weights=self._product_cum)[0]

    def _session(self, start_ms: int) -> list[tuple[int, dict[str, Any]]]:
        """One visit: (event time in ms, event) pairs in event-time order."""
        rng = self.rng
        user = rng.choices(self.users, cum_weights=self._user_cum)[0]
        fraud = rng.random() < self.config.fraud_rate
        logged_in = fraud or rng.random() < 0.65
        country = user.country
        if fraud and rng.random() < 0.5:
            country = rng.choice([c for c, _ in COUNTRIES if c != user.country])
        context = {
            "ip": f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randrange(1, 255)}",
            "user_agent": USER_AGENTS[user.device],
            "country": country,
            "device": user.device,
            "locale": "en-US",
        }
        state = {"user_id": user.user_id if logged_in else None, "ms": start_ms}
        session_id = f"s-{self._uuid()}"
        events: list[tuple[int, dict[str, Any]]] = []

        def emit(event_type: str, properties: dict[str, Any], gap_s: float = 15.0) -> None:
            if events:
                state["ms"] += int(rng.expovariate(1.0 / gap_s) * 1000) + 200
            events.append(
                (
                    state["ms"],
                    {
                        "event_id": self._uuid(),
                        "event_type": event_type,
                        "user_id": state["user_id"],
                        "anonymous_id": user.anonymous_id,
                        "session_id": session_id,
                        "ts": _ts(state["ms"]),
                        "properties": properties,
                        "context": context,
                    },
                )
            )

        landing = self._product()
        path = rng.choice(("/", f"/c/{landing.category}", f"/p/{landing.product_id}"))
        emit(
            "page_view",
            {
                "url": f"https://shop.example.com{path}",
                "path": path,
                "referrer": rng.choice((None, "https://www.google.com/", "https://t.co/x")),
                "title": "Shop",
            },
        )
        if not logged_in and rng.random() < 0.12:
            state["user_id"] = user.user_id
            emit(
                "identify",
                {
                    "traits": {
                        "country": user.country,
                        "device": user.device,
                        "plan": rng.choice(("free", "free", "plus")),
                    }
                },
            )
        if fraud:
            self._fraud_burst(emit, user)
            return events

        cart: dict[str, tuple[Product, int]] = {}
        for _ in range(1 + min(int(rng.expovariate(1 / 2.5)), 15)):
            if rng.random() < 0.25:
                term = rng.choice(SEARCH_TERMS)
                emit("search", {"query": term, "results_count": rng.randrange(0, 120)})
            product = self._product()
            if rng.random() < 0.35:
                emit(
                    "page_view",
                    {
                        "url": f"https://shop.example.com/c/{product.category}",
                        "path": f"/c/{product.category}",
                        "referrer": None,
                        "title": product.category,
                    },
                )
            emit(
                "product_view",
                {
                    "product_id": product.product_id,
                    "category": product.category,
                    "name": product.name,
                    "price": product.price,
                },
            )
            if rng.random() < 0.22:
                quantity = 1 if rng.random() < 0.8 else rng.randrange(2, 4)
                cart[product.product_id] = (product, cart.get(product.product_id, (product, 0))[1] + quantity)
                emit(
                    "add_to_cart",
                    {
                        "product_id": product.product_id,
                        "quantity": quantity,
                        "price": product.price,
                        "category": product.category,
                        "cart_id": session_id,
                    },
                )
            if cart and rng.random() < 0.06:
                removed_id = rng.choice(sorted(cart))
                removed, quantity = cart.pop(removed_id)
                emit(
                    "remove_from_cart",
                    {"product_id": removed.product_id, "quantity": quantity, "cart_id": session_id},
                )
        if not cart or rng.random() > 0.55:
            return events
        amount = round(sum(p.price * q for p, q in cart.values()), 2)
        emit(
            "checkout_started",
            {
                "cart_id": session_id,
                "amount": amount,
                "currency": CURRENCY,
                "items_count": sum(q for _, q in cart.values()),
            },
            gap_s=40,
        )
        if rng.random() > 0.7:
            return events
        promo = rng.choice(self.promos) if rng.random() < 0.15 else None
        items = [
            {"product_id": p.product_id, "quantity": q, "price": p.price, "category": p.category}
            for p, q in (cart[k] for k in sorted(cart))
        ]
        if promo is not None:
            amount = round(amount * (100 - promo.discount_pct) / 100, 2)
        if state["user_id"] is None:  # buying requires an account
            state["user_id"] = user.user_id
            emit("identify", {"traits": {"country": user.country, "device": user.device}}, gap_s=20)
        emit(
            "purchase",
            {
                "order_id": f"o-{self._uuid()}",
                "amount": amount,
                "currency": CURRENCY,
                "promo_code": promo.promo_code if promo else None,
                "payment_method": rng.choice(PAYMENT_METHODS),
                "items": items,
            },
            gap_s=60,
        )
        return events

    def _fraud_burst(self, emit: Any, user: User) -> None:
        """Several purchases within minutes, at amounts far above the user's usual."""
        rng = self.rng
        for _ in range(rng.randrange(4, 7)):
            product = max((self._product() for _ in range(3)), key=lambda p: p.price)
            quantity = rng.randrange(2, 6)
            amount = round(product.price * quantity * rng.uniform(5, 12) * user.spend, 2)
            price = round(amount / quantity, 2)
            emit(
                "purchase",
                {
                    "order_id": f"o-{self._uuid()}",
                    "amount": round(price * quantity, 2),
                    "currency": CURRENCY,
                    "promo_code": None,
                    "payment_method": "gift_card",
                    "items": [
                        {
                            "product_id": product.product_id,
                            "quantity": quantity,
                            "price": price,
                            "category": product.category,
                        }
                    ],
                },
                gap_s=40,
            )

    def _malformed(self, event: dict[str, Any]) -> bytes:
        """A broken version of an event, of the kinds real clients send."""
        rng = self.rng
        bad = dict(event)
        kind = rng.randrange(8)
        if kind == 0:
            return orjson.dumps(event)[: rng.randrange(10, 60)]  # truncated: not JSON at all
        if kind == 1:
            del bad["event_id"]
        elif kind == 2:
            bad["event_id"] = "not-a-uuid"
        elif kind == 3:
            bad["ts"] = event["ts"][:19]  # no timezone
        elif kind == 4:
            bad["user_id"] = None
            bad["anonymous_id"] = None
        elif kind == 5:
            bad["properties"] = "oops"
        elif kind == 6:
            bad["event_type"] = "purchase"
            bad["properties"] = {"amount": -5, "currency": "usd"}
        else:
            bad["ts"] = "yesterday"
        return orjson.dumps(bad)

    def emitted(self) -> Iterator[Emitted]:
        """Every output line in arrival order, labelled (tests use the labels as ground truth)."""
        cfg, rng = self.config, self.rng
        start_ms = int(cfg.start.timestamp() * 1000)
        mean_session_gap_ms = 1000.0 * 7.0 / cfg.events_per_s  # sessions average ~7 events
        pending: list[tuple[int, int, Emitted]] = []  # (arrival, order): tuples compare in C
        produced = emitted = 0
        session_ms = float(start_ms)
        while produced < cfg.events:
            session_ms += rng.expovariate(1.0 / mean_session_gap_ms)
            horizon = int(session_ms)
            while pending and pending[0][0] < horizon:
                emitted += 1
                yield heapq.heappop(pending)[2]
            for event_ms, event in self._session(horizon):
                if produced >= cfg.events:
                    break
                produced += self._schedule(event_ms, event, pending)
        while pending and emitted < cfg.events:  # a resend can take the count one past N
            emitted += 1
            yield heapq.heappop(pending)[2]

    def _schedule(self, event_ms: int, event: dict[str, Any], pending: list[tuple[int, int, Emitted]]) -> int:
        """Queue an event (and maybe its resend) by arrival time; returns how many lines it added."""
        cfg, rng = self.config, self.rng
        roll = rng.random()
        kind: Kind = "normal"
        delay_ms = int(rng.uniform(30, 1500))
        if roll < cfg.late_rate:
            kind, delay_ms = "late", int(rng.uniform(300.0, cfg.max_late_s) * 1000)
        elif roll < cfg.late_rate + cfg.out_of_order_rate:
            kind, delay_ms = "out_of_order", int(rng.uniform(5.0, 90.0) * 1000)
        if rng.random() < cfg.malformed_rate:
            kind, line = "malformed", self._malformed(event)
        else:
            line = orjson.dumps(event)
        arrival = event_ms + delay_ms
        order = next(self._order)
        heapq.heappush(pending, (arrival, order, Emitted(arrival, order, line, kind, event["event_id"])))
        if kind == "malformed" or rng.random() >= cfg.duplicate_rate:
            return 1
        resend = arrival + int(rng.uniform(500, 120_000))
        order = next(self._order)
        heapq.heappush(pending, (resend, order, Emitted(resend, order, line, "duplicate", event["event_id"])))
        return 2

    def lines(self) -> Iterator[bytes]:
        """NDJSON lines (without newline) in arrival order, exactly ``config.events`` of them."""
        return (e.line for e in self.emitted())


def generate_lines(config: GeneratorConfig) -> Iterator[bytes]:
    return ClickstreamGenerator(config).lines()
