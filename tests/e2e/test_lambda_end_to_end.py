"""The whole platform, end to end, checked against a ground truth computed independently.

Generated events with duplicates, late, out-of-order and malformed ones go through
`lambdalake demo --sample` (as a user runs it): collector → Kinesis (kinesalite) → speed layer
(Redis) + lake delivery → the hourly batch (Spark, gates, warehouse, watermark) → serving. Then the
serving API answers, for every site-wide hourly metric of the catalogue and every hour of the sample,
the value DuckDB computes straight from the generator's labelled output (malformed lines dropped,
except events sent without an event_id, which the collector accepts and gives one; duplicates
removed by event_id; nothing else): exactly for counts and sums, within 2% for
HyperLogLog-based numbers that the speed layer serves. Hours up to the batch watermark must come from
batch, later ones from speed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pytest
from fastapi.testclient import TestClient

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.local.process import settings_environment
from lambdalake.metrics.catalogue import load_catalogue
from lambdalake.settings import ENV_PREFIX, Settings
from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EVENTS = 6_000
PAST_HOURS = 3
DEMO_TIMEOUT_S = 900

# One hand-written DuckDB expression per metric, over the deduplicated valid events of one hour.
# Written from the metric descriptions, not from the catalogue's compilers: that is the point.
TRUTH_SQL = {
    "page_views": "count(*) FILTER (WHERE event_type = 'page_view')",
    "unique_pages": "count(DISTINCT path) FILTER (WHERE event_type = 'page_view')",
    "product_views": "count(*) FILTER (WHERE event_type = 'product_view')",
    "add_to_carts": "count(*) FILTER (WHERE event_type = 'add_to_cart')",
    "checkouts": "count(*) FILTER (WHERE event_type = 'checkout_started')",
    "orders": "count(*) FILTER (WHERE event_type = 'purchase')",
    "revenue": "sum(amount) FILTER (WHERE event_type = 'purchase')",
    "cart_sessions": "count(DISTINCT session_id) FILTER (WHERE event_type = 'add_to_cart')",
    "purchase_sessions": "count(DISTINCT session_id) FILTER (WHERE event_type = 'purchase')",
    "cart_abandonment_rate": "1 - count(DISTINCT session_id) FILTER (WHERE event_type = 'purchase')"
    " / nullif(count(DISTINCT session_id) FILTER (WHERE event_type = 'add_to_cart'), 0)",
    "active_users": "count(DISTINCT user_key)",
}
APPROXIMATE = {"unique_pages", "cart_sessions", "purchase_sessions", "active_users", "cart_abandonment_rate"}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _accepted_without_id(line: bytes) -> bytes | None:
    """The one "malformed" kind the collector accepts by contract: an event sent without an
    ``event_id`` gets a new one (docs: ingest/collector/pipeline.py). Else None."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or "event_id" in event:
        return None
    return orjson.dumps({**event, "event_id": str(uuid.uuid4())})


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, datetime]:
    """(the NDJSON the demo sends, the same lines without the malformed ones, the first hour)."""
    folder = tmp_path_factory.mktemp("e2e-sample")
    now = datetime.now(UTC)
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=PAST_HOURS)
    span_s = (now - first_hour).total_seconds() - 60  # the newest event a minute before now
    config = GeneratorConfig(
        events=EVENTS,
        seed=int(now.timestamp()),
        start=first_hour,
        events_per_s=EVENTS / span_s,
        duplicate_rate=0.03,
        late_rate=0.03,
        out_of_order_rate=0.03,
        malformed_rate=0.01,
        max_late_s=1800.0,
    )
    generator = ClickstreamGenerator(config)
    sent, valid = folder / "events.ndjson", folder / "valid.ndjson"
    kinds: dict[str, int] = {}
    with sent.open("wb") as all_lines, valid.open("wb") as good_lines:
        for item in generator.emitted():
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
            all_lines.write(item.line + b"\n")
            if item.kind != "malformed":
                good_lines.write(item.line + b"\n")
            elif (accepted := _accepted_without_id(item.line)) is not None:
                good_lines.write(accepted + b"\n")
    assert min(kinds.get(kind, 0) for kind in ("duplicate", "late", "malformed")) > 0, kinds
    reference = folder / "reference"
    reference.mkdir()
    (reference / "products.csv").write_bytes(generator.products_csv())
    (reference / "promos.csv").write_bytes(generator.promos_csv())
    return sent, valid, first_hour


@pytest.fixture(scope="module")
def platform(
    engines: Settings, sample: tuple[Path, Path, datetime], tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The demo run over the sample, with this test's own stream, lake, views and warehouse schemas."""
    from lambdalake import lake

    sent, _valid, _first = sample
    tag = uuid.uuid4().hex[:8]
    settings = engines.model_copy(
        update={
            "stream_name": f"e2e-{tag}",
            "dlq_stream_name": f"e2e-{tag}-dlq",
            "speed_key_prefix": f"e2e{tag}",
            "lake_uri_override": (tmp_path_factory.mktemp("e2e-lake") / "lake").as_uri(),
            "warehouse_schema": f"e2e_{tag}",
            "batch_meta_schema": f"e2e_meta_{tag}",
            "collector_port": free_port(),
            "serving_port": free_port(),
            "consumer_metrics_port": free_port(),
            "airflow_port": free_port(),
            # so the speed layer keeps every late event of the sample and both layers must agree
            "allowed_lateness_s": 4 * 3600,
        }
    )
    reference = sent.parent / "reference"
    lake.write_bytes(
        lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS),
        (reference / "products.csv").read_bytes(),
        settings,
    )
    lake.write_bytes(
        lake.join(settings.lake_uri, lake.REFERENCE_PROMOS), (reference / "promos.csv").read_bytes(), settings
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings_environment(settings))
    log = settings.log_dir / f"e2e-demo-{tag}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lambdalake",
                "demo",
                "--sample",
                str(sent),
                "--no-follow",
                "--no-airflow",
            ],
            env=env,
            cwd=settings.home,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=DEMO_TIMEOUT_S,
            check=False,
        )
    output = log.read_text(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert "batch watermark:" in output, output[-6000:]
    return settings


def _truth(valid: Path, first_hour: datetime, hours: int) -> dict[str, dict[datetime, float | None]]:
    """{metric: {hour: value}} from the valid lines: one row per event_id (its first arrival)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""
        CREATE TABLE events AS
        SELECT * EXCLUDE (n) FROM (
            SELECT json ->> 'event_id' AS event_id,
                   json ->> 'event_type' AS event_type,
                   json ->> 'session_id' AS session_id,
                   coalesce(json ->> 'user_id', json ->> 'anonymous_id') AS user_key,
                   json -> 'properties' ->> 'path' AS path,
                   TRY_CAST(json -> 'properties' ->> 'amount' AS DOUBLE) AS amount,
                   date_trunc('hour', CAST(json ->> 'ts' AS TIMESTAMPTZ)) AS hour,
                   row_number() OVER (PARTITION BY json ->> 'event_id' ORDER BY ordinal) AS n
            FROM (SELECT json, row_number() OVER () AS ordinal FROM read_json_objects('{valid}'))
        ) WHERE n = 1
        """
    )
    truth: dict[str, dict[datetime, float | None]] = {}
    for metric, expression in TRUTH_SQL.items():
        rows = con.execute(f"SELECT hour, {expression} FROM events GROUP BY hour").fetchall()
        by_hour = {h.astimezone(UTC): (None if v is None else float(v)) for h, v in rows}
        truth[metric] = {
            first_hour + timedelta(hours=i): by_hour.get(first_hour + timedelta(hours=i))
            for i in range(hours)
        }
    return truth


def _close(served: float | None, expected: float | None, rel: float, absolute: float = 1e-6) -> bool:
    if expected in (None, 0.0) or served is None:
        return (served or 0.0) == (expected or 0.0)
    return math.isclose(served, expected, rel_tol=rel, abs_tol=absolute)


def _approximately(metric: str, served: float | None, truth: dict[str, float | None]) -> bool:
    """A HyperLogLog count within 2%, or within one of the truth: at a few dozen items one pair of
    items sharing a register (≈1% of the time at 16 items) makes the estimate one short. A rate of two
    such counts within what the counts' error allows."""
    if metric == "cart_abandonment_rate":
        carts, purchases = truth["cart_sessions"], truth["purchase_sessions"]
        if served is None or not carts:
            return _close(served, truth[metric], 0.02)
        rates = [
            1 - (purchases or 0) * (1 + dp) / max(1.0, carts * (1 + dc))
            for dp in (-0.02, 0.02)
            for dc in (-0.02, 0.02)
        ] + [
            1 - ((purchases or 0) + dp) / (carts + dc)
            for dp in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if carts + dc > 0
        ]
        return min(rates) - 1e-9 <= served <= max(rates) + 1e-9
    return _close(served, truth[metric], 0.02, absolute=1.0)


def test_serving_equals_the_ground_truth_for_every_metric_and_hour(
    platform: Settings, sample: tuple[Path, Path, datetime]
) -> None:
    from serving.api import create_app

    _sent, valid, first_hour = sample
    hours = PAST_HOURS + 1
    catalogue = load_catalogue(platform.metric_catalogues)
    site_wide_hourly = {
        m.name
        for m in catalogue
        if "1h" in m.windows
        and not m.by
        and (m.is_derived or m.aggregate not in ("top_k", "last_n", "co_occurrence"))
    }
    assert site_wide_hourly == set(TRUTH_SQL), "a new site-wide metric needs its ground truth here"
    truth = _truth(valid, first_hour, hours)
    end = first_hour + timedelta(hours=hours)
    key = platform.read_keys[0]
    sources: dict[datetime, set[str]] = {}
    failures = []
    with TestClient(create_app(platform)) as client:
        for metric in sorted(TRUTH_SQL):
            response = client.get(
                f"/v1/metrics/{metric}",
                params={"start": _iso(first_hour), "end": _iso(end), "granularity": "hour"},
                headers={"X-Read-Key": key},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["degraded"] == [], body["degraded"]
            watermark = (
                datetime.fromisoformat(body["watermark"].replace("Z", "+00:00"))
                if body["watermark"]
                else None
            )
            points = {datetime.fromisoformat(p["start"].replace("Z", "+00:00")): p for p in body["points"]}
            assert sorted(points) == [
                first_hour + timedelta(hours=i) for i in range(hours)
            ]  # no gap, no overlap
            for hour, point in points.items():
                expected_source = "batch" if watermark is not None and hour <= watermark else "speed"
                assert point["source"] == expected_source, (metric, hour, point, watermark)
                sources.setdefault(hour, set()).add(point["source"])
                exact = point["source"] == "batch" or metric not in APPROXIMATE
                at_hour = {name: values[hour] for name, values in truth.items()}
                if not (
                    _close(point["value"], truth[metric][hour], 1e-9)
                    if exact
                    else _approximately(metric, point["value"], at_hour)
                ):
                    failures.append(
                        (metric, f"{hour:%H:00}", point["source"], point["value"], truth[metric][hour])
                    )
    assert failures == [], failures
    batch_hours = [h for h, s in sources.items() if s == {"batch"}]
    assert len(batch_hours) >= 2, sources  # the boundary is really crossed in this test
    assert sources[first_hour + timedelta(hours=PAST_HOURS)] == {"speed"}  # the current hour
