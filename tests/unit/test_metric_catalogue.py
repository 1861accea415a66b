"""The metric catalogue: entries are data, checked on load, read the same way by every layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdalake.metrics.catalogue import CatalogueError, evaluate_formula, load_catalogue, parse_catalogue
from lambdalake.metrics.evaluate import Contribution, bucket_start, contributions, field_value

BUILT_IN = load_catalogue()
PURCHASE = {
    "event_id": "3f1b2c4d-1111-4222-8333-444455556666",
    "event_type": "purchase",
    "user_id": None,
    "anonymous_id": "anon-1",
    "session_id": "s-1",
    "ts": "2026-01-01T10:15:30.500Z",
    "properties": {
        "order_id": "o-1",
        "amount": 40.0,
        "currency": "USD",
        "items": [
            {"product_id": "P1", "quantity": 2, "price": 10.0, "category": "books"},
            {"product_id": "P2", "quantity": 1, "price": 20.0, "category": "toys"},
            "not an item",
        ],
    },
}


def test_built_in_catalogue_covers_the_speed_views() -> None:
    names = set(BUILT_IN.by_name)
    assert {
        "page_views",
        "unique_pages",
        "add_to_carts",
        "orders",
        "revenue",
        "cart_abandonment_rate",
        "active_users",
        "trending_products_views",
        "trending_products_purchases_by_category",
        "recently_viewed",
        "user_lifetime_value",
        "user_average_order_value",
        "session_duration_s",
        "co_viewed_products",
    } <= names
    assert len(BUILT_IN.aggregated()) == len(BUILT_IN) - 3  # three formulas


def test_sliding_spans_use_the_finest_window_within_the_bucket_limit() -> None:
    active = BUILT_IN["active_users"]
    assert active.sliding_plan("5m") == (60, 5)
    assert active.sliding_plan("1h") == (60, 60)  # the last 60 minutes, not the clock hour
    assert active.sliding_plan("1d") == (3600, 24)  # 1,440 minutes would exceed the limit
    assert active.sliding_plan("30d") == (86400, 30)


def test_contributions_of_an_exploded_purchase() -> None:
    by_category = list(contributions(BUILT_IN["trending_products_purchases_by_category"], PURCHASE))
    assert by_category == [Contribution(("books",), "P1", 2.0), Contribution(("toys",), "P2", 1.0)]
    assert list(contributions(BUILT_IN["revenue"], PURCHASE)) == [Contribution((), 40.0, 1.0)]
    assert list(contributions(BUILT_IN["orders"], PURCHASE)) == [Contribution((), 1, 1.0)]
    assert list(contributions(BUILT_IN["page_views"], PURCHASE)) == []


def test_user_falls_back_to_anonymous_id_and_ts_becomes_epoch_seconds() -> None:
    assert field_value(PURCHASE, "user") == "anon-1"
    [last] = contributions(BUILT_IN["user_last_activity"], PURCHASE)
    assert last.key == ("anon-1",)
    assert last.value == 1767262530.5


def test_events_missing_a_key_or_value_contribute_nothing() -> None:
    no_amount = PURCHASE | {"properties": {"order_id": "o", "items": []}}
    assert list(contributions(BUILT_IN["revenue"], no_amount)) == []
    no_session = PURCHASE | {"session_id": None}
    assert list(contributions(BUILT_IN["session_last_ts"], no_session)) == []


def test_window_buckets_are_epoch_aligned() -> None:
    assert bucket_start(1767262530.5, 60) == 1767262500
    assert bucket_start(1767262530.5, 3600) == 1767261000 + 600
    assert bucket_start(1767262530.5, 86400) == 1767225600


@pytest.mark.parametrize(
    ("formula", "values", "expected"),
    [
        ("1 - purchase_sessions / cart_sessions", {"purchase_sessions": 3, "cart_sessions": 12}, 0.75),
        ("a / b", {"a": 1, "b": 0}, None),
        ("a - b", {"a": 5}, None),
        ("-(a + 2) * 3", {"a": 1}, -9.0),
    ],
)
def test_formulas(formula: str, values: dict[str, float], expected: float | None) -> None:
    assert evaluate_formula(formula, values) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("- {name: x, description: d, aggregate: sum}", "aggregate sum needs `field`"),
        (
            "- {name: x, description: d, aggregate: count, formula: a}",
            "exactly one of `aggregate` or `formula`",
        ),
        ("- {name: X, description: d, aggregate: count}", "lower_snake_case"),
        ("- {name: x, description: d, aggregate: count, by: [properties]}", "is not a field path"),
        ("- {name: x, description: d, aggregate: count, windows: [5q]}", "is not a duration"),
        (
            "- {name: x, description: d, aggregate: count, windows: [1h], sliding: [90m]}",
            "not a multiple of the 1h",
        ),
        ("- {name: x, description: d, aggregate: top_k, item: item.product_id}", "need `explode`"),
        (
            "- {name: x, description: d, aggregate: count, colour: red}",
            "colour: Extra inputs are not permitted",
        ),
        ("- {name: x, description: d, formula: 'nope / 2'}", "unknown metric(s) nope"),
        ("- {name: x, description: d, formula: '__import__(1)'}", "only metric names, numbers"),
        (
            "- {name: a, description: d, aggregate: count, windows: [1m]}\n"
            "- {name: b, description: d, formula: 'a * 2', windows: [1h]}",
            "input a has other windows or keys",
        ),
        ("- {name: page_views, description: d, aggregate: count}", "already defined in builtin.yaml"),
    ],
)
def test_invalid_entries_name_file_metric_and_reason(tmp_path: Path, entry: str, message: str) -> None:
    user_file = tmp_path / "mine.yaml"
    user_file.write_text("metrics:\n" + "\n".join("  " + line for line in entry.splitlines()) + "\n")
    with pytest.raises(CatalogueError) as caught:
        load_catalogue([user_file])
    assert message in str(caught.value)


def test_a_user_adds_a_metric_without_python(tmp_path: Path) -> None:
    user_file = tmp_path / "mine.yaml"
    user_file.write_text(
        "metrics:\n"
        "  - name: big_orders\n"
        "    description: Purchases over 100.\n"
        "    filter: {event_type: purchase, where: [{field: properties.amount, op: '>', value: 100}]}\n"
        "    aggregate: count\n"
        "    windows: [1h]\n"
    )
    catalogue = load_catalogue([user_file])
    metric = catalogue["big_orders"]
    assert list(contributions(metric, PURCHASE)) == []
    big = PURCHASE | {"properties": PURCHASE["properties"] | {"amount": 250.0}}
    assert list(contributions(metric, big)) == [Contribution((), 1, 1.0)]


def test_yaml_errors_are_catalogue_errors() -> None:
    with pytest.raises(CatalogueError, match="not valid YAML"):
        parse_catalogue([("bad.yaml", "metrics: [unclosed")])
    with pytest.raises(CatalogueError, match="expected a mapping"):
        parse_catalogue([("bad.yaml", "- just a list")])
