"""The clickstream generator: deterministic, realistic, and honest about what it injects."""

from __future__ import annotations

import collections
import csv
import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.generator import ClickstreamGenerator, Emitted, GeneratorConfig
from lambdalake.contract import EventValidator


@pytest.fixture(scope="module")
def sample() -> list[Emitted]:
    return list(ClickstreamGenerator(GeneratorConfig(events=20_000, seed=3)).emitted())


def test_same_seed_same_bytes_and_other_seed_other_bytes() -> None:
    first = list(ClickstreamGenerator(GeneratorConfig(events=2_000, seed=5)).lines())
    again = list(ClickstreamGenerator(GeneratorConfig(events=2_000, seed=5)).lines())
    other = list(ClickstreamGenerator(GeneratorConfig(events=2_000, seed=6)).lines())
    assert first == again
    assert first != other


@pytest.mark.parametrize("events", [0, 1, 7, 999])
def test_exactly_the_requested_number_of_lines(events: int) -> None:
    assert len(list(ClickstreamGenerator(GeneratorConfig(events=events, seed=1)).lines())) == events


def test_lines_come_in_arrival_order(sample: list[Emitted]) -> None:
    arrivals = [e.arrival_ms for e in sample]
    assert arrivals == sorted(arrivals)


def test_injected_faults_are_near_their_rates(sample: list[Emitted]) -> None:
    kinds = collections.Counter(e.kind for e in sample)
    n = len(sample)
    assert 0.005 < kinds["duplicate"] / n < 0.015
    assert 0.005 < kinds["late"] / n < 0.015
    assert 0.01 < kinds["out_of_order"] / n < 0.03
    assert 0.002 < kinds["malformed"] / n < 0.008


def test_malformed_lines_fail_validation_and_all_others_pass(sample: list[Emitted]) -> None:
    validator = EventValidator()
    for item in sample:
        try:
            event = orjson.loads(item.line)
        except orjson.JSONDecodeError:
            assert item.kind == "malformed"
            continue
        reasons = validator.validate(event)
        assert bool(reasons) == (item.kind == "malformed"), (item.kind, reasons, item.line[:200])


def test_duplicates_resend_an_earlier_line_byte_for_byte(sample: list[Emitted]) -> None:
    first_seen: dict[str | None, bytes] = {}
    for item in sample:
        if item.kind == "duplicate":
            assert first_seen[item.event_id] == item.line
        else:
            first_seen.setdefault(item.event_id, item.line)


def test_late_events_arrive_minutes_to_hours_after_their_event_time(sample: list[Emitted]) -> None:
    for item in sample:
        if item.kind not in ("late", "normal"):
            continue
        ts = datetime.fromisoformat(orjson.loads(item.line)["ts"])
        lateness_s = item.arrival_ms / 1000 - ts.timestamp()
        if item.kind == "late":
            assert 300 <= lateness_s <= 3 * 3600 + 1
        else:
            assert 0 < lateness_s < 2


def test_funnel_drops_off_at_every_step(sample: list[Emitted]) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for item in sample:
        if item.kind not in ("malformed", "duplicate"):
            counts[orjson.loads(item.line)["event_type"]] += 1
    assert (
        counts["product_view"] > counts["add_to_cart"] > counts["checkout_started"] > counts["purchase"] > 0
    )
    assert counts["page_view"] > 0
    assert counts["search"] > 0
    assert counts["identify"] > 0
    assert counts["remove_from_cart"] > 0


def test_product_popularity_is_skewed(sample: list[Emitted]) -> None:
    views: collections.Counter[str] = collections.Counter()
    for item in sample:
        if item.kind == "normal":
            event = orjson.loads(item.line)
            if event["event_type"] == "product_view":
                views[event["properties"]["product_id"]] += 1
    top = [count for _, count in views.most_common()]
    assert top[0] > 10 * top[len(top) // 2]  # Zipf: the head dwarfs the median product


def test_purchase_amounts_match_items_unless_discounted(sample: list[Emitted]) -> None:
    for item in sample:
        if item.kind != "normal":
            continue
        event = orjson.loads(item.line)
        if event["event_type"] == "purchase" and event["properties"]["promo_code"] is None:
            props = event["properties"]
            total = sum(i["price"] * i["quantity"] for i in props["items"])
            assert props["amount"] == pytest.approx(total, abs=0.02)


def test_fraud_like_bursts_and_country_changes_exist() -> None:
    lines = [orjson.loads(e.line) for e in ClickstreamGenerator(GeneratorConfig(events=20_000, seed=3)).emitted()
             if e.kind == "normal"]  # fmt: skip
    purchases: dict[str, list[datetime]] = collections.defaultdict(list)
    countries: dict[str, set[str]] = collections.defaultdict(set)
    for event in lines:
        if event.get("user_id"):
            countries[event["user_id"]].add(event["context"]["country"])
        if event["event_type"] == "purchase":
            purchases[event["user_id"]].append(datetime.fromisoformat(event["ts"]))
    bursts = [u for u, ts in purchases.items() if any(
        sum(1 for t in ts if start <= t <= start + timedelta(minutes=10)) > 3 for start in ts)]  # fmt: skip
    assert bursts, "expected users with more than 3 purchases in 10 minutes"
    assert any(len(c) > 1 for c in countries.values()), "expected users seen from two countries"


def test_event_time_starts_at_start_and_spans_events_over_rate() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    config = GeneratorConfig(
        events=5_000, seed=2, start=start, events_per_s=10, late_rate=0, out_of_order_rate=0, malformed_rate=0
    )
    times = [
        datetime.fromisoformat(orjson.loads(line)["ts"]) for line in ClickstreamGenerator(config).lines()
    ]
    assert min(times) >= start
    span_s = (max(times) - min(times)).total_seconds()
    assert 400 < span_s < 1200  # about 5,000 / 10 per second, plus the tails of the last sessions


def test_reference_csv_covers_every_product_in_events() -> None:
    generator = ClickstreamGenerator(GeneratorConfig(events=3_000, seed=4, products=50))
    rows = list(csv.DictReader(io.StringIO(generator.products_csv().decode())))
    assert len(rows) == 50
    assert {r["category"] for r in rows} >= {"books", "electronics"}
    catalog = {r["product_id"] for r in rows}
    for line in generator.lines():
        if b'"product_id"' in line and line.endswith(b"}"):
            props = orjson.loads(line)["properties"]
            if isinstance(props, dict) and "product_id" in props:
                assert props["product_id"] in catalog
    promos = list(csv.DictReader(io.StringIO(generator.promos_csv().decode())))
    assert {"promo_code", "discount_pct", "category", "valid_from", "valid_to"} == set(promos[0])


@pytest.mark.parametrize(
    "bad", [{"events": -1}, {"events": 1, "duplicate_rate": 1.5}, {"events": 1, "events_per_s": 0}]
)
def test_bad_configuration_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        GeneratorConfig(**bad)  # type: ignore[arg-type]
