"""The enrich group on real Redis: one denormalised order per purchase, joined with the lake's
reference CSVs (reloaded when they change) and with the user's latest identify traits."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis as redis_lib

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake import lake
from lambdalake.consumer.processor import BatchContext
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord
from speed_layer.enrich import EnrichProcessor
from speed_layer.keys import SpeedKeys
from speed_layer.metrics import SpeedMetrics
from tests.integration.test_speed_views import in_memory_records, speed_settings

pytestmark = pytest.mark.integration


def test_orders_are_joined_with_reference_data_and_traits_once(engines: Settings, tmp_path: Path) -> None:
    settings = speed_settings(
        engines, lake_uri_override=(tmp_path / "lake").as_uri(), enrich_reference_check_s=0.05
    )
    client = redis_lib.Redis.from_url(settings.redis_url)
    start = datetime.now(UTC) - timedelta(hours=1)
    generator = ClickstreamGenerator(GeneratorConfig(events=5000, seed=4, start=start, duplicate_rate=0.03))
    lake.write_bytes(
        lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS), generator.products_csv(), settings
    )
    lake.write_bytes(lake.join(settings.lake_uri, lake.REFERENCE_PROMOS), generator.promos_csv(), settings)
    emitted = list(generator.emitted())
    shards = in_memory_records(emitted)
    processor = EnrichProcessor(settings, client, SpeedMetrics())
    for _ in range(2):  # the second pass is a full replay
        for shard, records in shards.items():
            ctx = BatchContext("enrich", processor.stream, shard, "w", 1, 0, 1)
            for i in range(0, len(records), 250):
                processor.process_records(records[i : i + 250], ctx)

    # only the events enrichment acts on are remembered for dedupe (the others cost Redis memory)
    remembered = set()
    for key in client.scan_iter(match=f"{settings.speed_key_prefix}:enrich:seen:*"):
        remembered |= {i.decode() for i in client.smembers(key)}
    acted_on = {
        event["event_id"]
        for event in (orjson.loads(e.line) for e in emitted if e.kind != "malformed")
        if event["event_type"] in ("purchase", "identify")
    }
    assert remembered == acted_on
    # and the group's counters (first pass) say so: the other event types are skipped, not applied
    stats = {
        k.decode(): int(v)
        for k, v in client.hgetall(SpeedKeys(settings.speed_key_prefix).stats("enrich")).items()
    }
    total = sum(len(records) for records in shards.values())
    other = sum(
        1
        for event in (orjson.loads(e.line) for e in emitted if e.kind != "malformed")
        if event["event_type"] not in ("purchase", "identify")
    )
    assert stats["applied"] == len(acted_on)
    assert stats["skipped"] == other
    assert stats["applied"] + stats["skipped"] + stats["duplicates"] + stats.get("invalid", 0) == total
    assert "replayed" not in stats  # the replay wrote nothing (its records were at or below the hwm)

    rows = client.xrange(SpeedKeys(settings.speed_key_prefix).orders)
    orders = [orjson.loads(fields[b"order"]) for _, fields in rows]
    purchases = {}
    for e in emitted:
        if e.kind != "malformed":
            event = orjson.loads(e.line)
            if event["event_type"] == "purchase":
                purchases.setdefault(event["event_id"], event)
    assert sorted(o["event_id"] for o in orders) == sorted(purchases)
    names = {p.product_id: (p.name, p.brand) for p in generator.products}
    for order in orders:
        assert order["amount"] == purchases[order["event_id"]]["properties"]["amount"]
        for item in order["items"]:
            assert (item["name"], item["brand"]) == names[item["product_id"]]
    with_promo = [o for o in orders if o["promo_code"]]
    assert with_promo
    assert all(o["promo_discount_pct"] for o in with_promo)
    # every purchase by a user who identified earlier on the shard carries the traits
    assert any(o["traits"] and "country" in o["traits"] for o in orders)

    # the products file changes: later orders see the new names
    renamed = generator.products_csv().replace(b"Classic ", b"Renamed ")
    lake.write_bytes(lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS), renamed, settings)
    time.sleep(0.1)
    later = next(
        e for e in emitted if e.kind != "malformed" and b'"purchase"' in e.line and b"Classic" not in e.line
    )
    event = orjson.loads(later.line)
    event["event_id"] = "00000000-0000-4000-8000-000000000001"
    event["properties"]["items"][0]["product_id"] = next(
        p.product_id for p in generator.products if p.name.startswith("Classic ")
    )
    record = StreamRecord("shardId-new", "1", event["user_id"], orjson.dumps(event), time.time())
    ctx = BatchContext("enrich", processor.stream, "shardId-new", "w", 1, 0, 1)
    processor.process_records([record], ctx)
    last = orjson.loads(
        client.xrevrange(SpeedKeys(settings.speed_key_prefix).orders, count=1)[0][1][b"order"]
    )
    assert last["event_id"] == event["event_id"]
    assert last["items"][0]["name"].startswith("Renamed ")


def test_a_pipelined_flow_takes_a_changed_reference_file(engines: Settings, tmp_path: Path) -> None:
    """A flow's builder lives for many batches under a backlog: it must not keep an old file."""
    settings = speed_settings(
        engines, lake_uri_override=(tmp_path / "lake").as_uri(), enrich_reference_check_s=0.05
    )
    client = redis_lib.Redis.from_url(settings.redis_url)
    generator = ClickstreamGenerator(GeneratorConfig(events=2000, seed=8, start=datetime.now(UTC)))
    products = lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS)
    lake.write_bytes(products, generator.products_csv(), settings)
    emitted = [orjson.loads(e.line) for e in generator.emitted() if e.kind != "malformed"]
    classic = next(p.product_id for p in generator.products if p.name.startswith("Classic "))
    purchases = [e for e in emitted if e["event_type"] == "purchase"][:2]
    for n, event in enumerate(purchases):
        event["event_id"] = f"00000000-0000-4000-8000-00000000010{n}"
        event["properties"]["items"][0]["product_id"] = classic
    processor = EnrichProcessor(settings, client, SpeedMetrics())
    ctx = BatchContext("enrich", processor.stream, "shardId-pipe", "w", 1, 0, 1)

    def batch(n: int) -> list[StreamRecord]:
        event = purchases[n]
        return [StreamRecord("shardId-pipe", str(n + 1), event["user_id"], orjson.dumps(event), time.time())]

    processor.submit_records(batch(0), ctx)  # its builder holds the file as it was
    lake.write_bytes(products, generator.products_csv().replace(b"Classic ", b"Renamed "), settings)
    time.sleep(0.1)
    processor.submit_records(batch(1), ctx)
    processor.finish()
    rows = client.xrange(SpeedKeys(settings.speed_key_prefix).orders)
    names = {o["event_id"]: o["items"][0]["name"] for o in (orjson.loads(f[b"order"]) for _, f in rows)}
    assert names[purchases[0]["event_id"]].startswith("Classic ")
    assert names[purchases[1]["event_id"]].startswith("Renamed ")
