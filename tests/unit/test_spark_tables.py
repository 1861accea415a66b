"""sessionize, product/category/funnel/user tables and orders on about ten rows each."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame, SparkSession

from spark_jobs import aggregates, orders, sessionize
from spark_jobs.clean_events import clean_events
from spark_jobs.schemas import PRODUCTS_CSV_SCHEMA, PROMOS_CSV_SCHEMA
from tests.spark_fixtures import as_dicts, event, raw_frame, spark, ts

__all__ = ["spark"]
pytestmark = pytest.mark.slow


def clean(spark: SparkSession, rows: list[dict]) -> DataFrame:
    kept, _ = clean_events(raw_frame(spark, rows), spark.createDataFrame([], "event_id string, ts timestamp"))
    return kept


def view(n: int, at: str, product: str = "P1", **extra) -> dict:
    props = {"product_id": product, "category": "books", "price": 10.0}
    return event(n, event_type="product_view", ts=ts(at), properties=props, **extra)


def cart(n: int, at: str, product: str = "P1", **extra) -> dict:
    props = {"product_id": product, "category": "books", "quantity": 2, "price": 10.0}
    return event(n, event_type="add_to_cart", ts=ts(at), properties=props, **extra)


def purchase(n: int, at: str, promo: str | None = None, **extra) -> dict:
    items = [
        {"product_id": "P1", "quantity": 2, "price": 10.0, "category": "books"},
        {"product_id": "P2", "quantity": 1, "price": 5.5},
    ]
    props = {"order_id": f"o-{n}", "amount": 25.5, "currency": "USD", "promo_code": promo, "items": items}
    return event(n, event_type="purchase", ts=ts(at), properties=props, **extra)


def test_sessions_split_after_thirty_minutes_of_inactivity(spark: SparkSession) -> None:
    rows = [
        event(1, ts=ts("2026-01-01T10:00:00"), properties={"path": "/"}),
        event(2, ts=ts("2026-01-01T10:10:00"), properties={"path": "/c/books"}),
        event(3, ts=ts("2026-01-01T10:20:00"), properties={"path": "/"}),
        purchase(4, "2026-01-01T10:45:00"),  # 25 minutes later: same session
        event(5, ts=ts("2026-01-01T11:15:01"), properties={"path": "/"}),  # 30 min 1 s later: a new one
        event(6, ts=ts("2026-01-01T10:05:00"), user_id=None, anonymous_id="a9", properties={"path": "/x"}),
    ]
    sessions = as_dicts(sessionize.sessionize(clean(spark, rows)), "user_key", "session_start")
    assert [
        (
            s["user_key"],
            s["duration_s"],
            s["events"],
            s["page_views"],
            s["unique_pages"],
            s["converted"],
            s["revenue"],
        )
        for s in sessions
    ] == [
        ("a9", 0.0, 1, 1, 1, False, 0.0),
        ("u1", 2700.0, 4, 3, 2, True, 25.5),
        ("u1", 0.0, 1, 1, 1, False, 0.0),
    ]
    assert len({s["session_key"] for s in sessions}) == 3
    assert (sessions[1]["session_start"], sessions[1]["day"]) == (ts("2026-01-01T10:00:00"), "01")


def test_product_and_category_tables(spark: SparkSession) -> None:
    rows = [
        view(1, "2026-01-01T10:00:00"),
        view(2, "2026-01-01T10:01:00"),
        view(3, "2026-01-01T10:02:00", product="P2"),
        cart(4, "2026-01-01T10:03:00"),
        purchase(5, "2026-01-01T10:04:00"),
        view(6, "2026-01-01T11:00:00"),
    ]
    events = clean(spark, rows)
    hourly = as_dicts(aggregates.product_hourly(events), "hour_start", "product_id")
    assert [
        (
            r["hour"],
            r["product_id"],
            r["views"],
            r["carts"],
            r["purchases"],
            r["units"],
            r["revenue"],
            r["conversion"],
        )
        for r in hourly
    ] == [
        ("10", "P1", 2, 1, 1, 2, 20.0, 0.5),
        ("10", "P2", 1, 0, 1, 1, 5.5, 1.0),
        ("11", "P1", 1, 0, 0, 0, 0.0, 0.0),
    ]
    daily = as_dicts(aggregates.product_daily(events), "product_id")
    assert [(r["product_id"], r["views"], r["conversion"]) for r in daily] == [
        ("P1", 3, 1 / 3),
        ("P2", 1, 1.0),
    ]
    categories = as_dicts(aggregates.category_daily(events), "category")
    assert [
        (r["category"], r["products_viewed"], r["views"], r["purchases"], r["units"], r["revenue"])
        for r in categories
    ] == [(None, 0, 0, 1, 1, 5.5), ("books", 2, 4, 1, 2, 20.0)]  # a line without a category stays visible


def test_funnel_counts_sessions_that_reached_every_earlier_step(spark: SparkSession) -> None:
    rows = [
        view(1, "2026-01-01T10:00:00", session_id="s1"),
        cart(2, "2026-01-01T10:01:00", session_id="s1"),
        event(3, event_type="checkout_started", ts=ts("2026-01-01T10:02:00"), session_id="s1"),
        purchase(4, "2026-01-01T10:03:00", session_id="s1"),
        view(5, "2026-01-01T10:00:00", session_id="s2"),
        cart(6, "2026-01-01T10:01:00", session_id="s2"),
        view(7, "2026-01-01T10:00:00", session_id="s3"),
        purchase(8, "2026-01-01T10:03:00", session_id="s4"),  # skipped the earlier steps
        view(9, "2026-01-01T10:00:00", session_id=None),
    ]
    funnel = as_dicts(aggregates.funnel_daily(clean(spark, rows)), "step_index")
    assert [(r["step"], r["sessions"], r["rate_from_previous"], r["rate_from_first"]) for r in funnel] == [
        ("product_view", 3, 1.0, 1.0),
        ("add_to_cart", 2, 2 / 3, 2 / 3),
        ("checkout_started", 1, 0.5, 1 / 3),
        ("purchase", 1, 1.0, 1 / 3),
    ]


def test_user_daily_facts(spark: SparkSession) -> None:
    rows = [
        view(1, "2026-01-01T10:00:00", user_id=None),
        event(2, ts=ts("2026-01-01T10:01:00"), user_id=None),
        purchase(3, "2026-01-01T10:05:00", session_id="s2"),
        purchase(4, "2026-01-02T09:00:00"),
    ]
    facts = as_dicts(aggregates.user_daily(clean(spark, rows)), "date", "user_key")
    assert [
        (
            str(r["date"]),
            r["user_key"],
            r["user_id"],
            r["events"],
            r["sessions"],
            r["page_views"],
            r["orders"],
            r["revenue"],
        )
        for r in facts
    ] == [
        ("2026-01-01", "a1", None, 2, 1, 1, 0, 0.0),
        ("2026-01-01", "u1", "u1", 1, 1, 0, 1, 25.5),
        ("2026-01-02", "u1", "u1", 1, 1, 0, 1, 25.5),
    ]


def test_orders_are_enriched_with_products_and_promos(spark: SparkSession) -> None:
    products = spark.createDataFrame(
        [("P1", "Classic Novel", "books", 12.0, "brand-01"), ("P2", "Eco Kettle", "home", 6.0, "brand-02")],
        PRODUCTS_CSV_SCHEMA,
    )
    promos = spark.createDataFrame(
        [
            ("BOOKS15", 15, "books", "2026-01-01", "2099-12-31"),
            ("TOYS20", 20, "toys", "2026-01-01", "2099-12-31"),
        ],
        PROMOS_CSV_SCHEMA,
    )
    rows = [
        purchase(1, "2026-01-01T10:00:00", promo="BOOKS15"),
        purchase(2, "2026-01-01T10:01:00", promo="TOYS20"),  # no toy in the cart
        purchase(3, "2026-01-01T10:02:00", promo="NOPE"),
        purchase(4, "2026-01-01T10:03:00"),
        view(5, "2026-01-01T10:04:00"),
    ]
    out = as_dicts(orders.orders(clean(spark, rows), products, promos), "order_id")
    assert [(r["order_id"], r["promo_discount_pct"], r["promo_valid"]) for r in out] == [
        ("o-1", 15, True),
        ("o-2", 20, False),
        ("o-3", None, False),
        ("o-4", None, None),
    ]
    first = out[0]
    assert (first["items_count"], first["units"], first["categories"], first["country"], first["hour"]) == (
        2,
        3,
        ["books", "home"],
        "US",
        "10",
    )
    assert first["items"][1] == {
        "product_id": "P2",
        "quantity": 1,
        "price": 5.5,
        "line_total": 5.5,
        "category": "home",
        "name": "Eco Kettle",
        "brand": "brand-02",
        "list_price": 6.0,
    }
