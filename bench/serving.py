"""`lambdalake bench serving`: API latency under 100 concurrent clients, and freshness.

Starts its own engines (kinesalite, redis-server, PostgreSQL) in a temporary home on free ports,
fills the speed view with generated events of the last two hours (in-process views group) and the
batch view with hourly rows of the day before (published through the batch watermark), then runs
the collector, the views group and ``lambdalake serve`` as child processes and measures:

- ``api_p50_ms`` / ``api_p99_ms``: 100 concurrent clients (httpx, async) looping over a mix of
  reconciled series (24 hourly points across the batch|speed boundary, 60 minutes, 2 days), active
  users, trending and a user's recent products, for 10 s (``--quick``) or 30 s;
- ``freshness_p50_ms`` / ``freshness_p99_ms``: a product view of a new user posted to the collector
  (timed from its 200) until ``/v1/users/{id}/recent`` shows it, polled every 10 ms; one probe at a
  time, with no other load.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench._common import collector_headers, free_port
from lambdalake.settings import Settings

CLIENTS = 100
READ = {"X-Read-Key": "local-read-key"}


def _settings(home: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        kinesis_port=free_port(),
        redis_port=free_port(),
        warehouse_port=free_port(),
        collector_port=free_port(),
        serving_port=free_port(),
        consumer_metrics_port=free_port(),
        stream_shards=2,
        consumer_idle_poll_s=0.02,
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _fill_speed(settings: Settings, events: int) -> None:
    import redis as redis_lib

    from ingest.generator import ClickstreamGenerator, GeneratorConfig
    from lambdalake.consumer.processor import BatchContext
    from lambdalake.stream.bus import StreamRecord
    from speed_layer.metrics import SpeedMetrics
    from speed_layer.views import ViewsProcessor

    start = datetime.now(UTC) - timedelta(hours=2)
    config = GeneratorConfig(events=events, start=start, events_per_s=events / 7200)
    client = redis_lib.Redis.from_url(settings.redis_url)
    local = settings.model_copy(update={"allowed_lateness_s": 3 * 3600})
    processor = ViewsProcessor(local, client, SpeedMetrics())
    records = [
        StreamRecord("seed", str(10**20 + i), str(i), e.line, time.time())
        for i, e in enumerate(ClickstreamGenerator(config).emitted())
    ]
    ctx = BatchContext("views", settings.stream_name, "seed", "bench", 1, 0, 1)
    for i in range(0, len(records), 500):
        processor.process_records(records[i : i + 500], ctx)
    client.close()


def _fill_batch(settings: Settings, hours: list[datetime]) -> None:
    from batch.watermark import Watermark
    from warehouse.query import warehouse_loader

    loader = warehouse_loader(settings)
    loader.ensure_schema()
    with loader.connect() as conn:
        for n, hour in enumerate(hours):
            for metric, value in (("page_views", 1000.0 + n), ("revenue", 5000.0 + n), ("orders", 50.0 + n)):
                conn.execute(
                    "INSERT INTO agg_metrics_hourly_v1"
                    " (metric, metric_window, bucket_start, metric_key, value)"
                    " VALUES (%s, '1h', %s, '[]'::jsonb, %s)",
                    (metric, hour.replace(tzinfo=None), value),
                )
        conn.commit()
    watermark = Watermark(settings)
    for hour in hours:
        watermark.mark_published(hour, 1)


def _queries(now: datetime) -> list[tuple[str, dict[str, str]]]:
    def z(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    return [
        (
            "/v1/metrics/page_views",
            {"start": z(now - timedelta(hours=24)), "end": z(now), "granularity": "hour"},
        ),
        (
            "/v1/metrics/revenue",
            {"start": z(now - timedelta(hours=24)), "end": z(now), "granularity": "hour"},
        ),
        (
            "/v1/metrics/page_views",
            {"start": z(now - timedelta(hours=1)), "end": z(now), "granularity": "minute"},
        ),
        ("/v1/metrics/orders", {"start": z(now - timedelta(days=2)), "end": z(now), "granularity": "day"}),
        ("/v1/active-users", {}),
        ("/v1/trending", {"window": "15m"}),
        ("/v1/users/u000001/recent", {}),
    ]


async def _load(url: str, seconds: float) -> tuple[list[float], int]:
    queries = _queries(datetime.now(UTC))
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers=READ, limits=limits, timeout=60) as client:

        async def one_client(index: int) -> None:
            nonlocal errors
            i = index
            while time.perf_counter() < deadline:
                path, params = queries[i % len(queries)]
                i += 1
                started = time.perf_counter()
                response = await client.get(path, params=params)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    errors += 1

        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    return latencies, errors


def _probe(
    collector: str, serving: str, http: httpx.Client, headers: dict[str, str], timeout_s: float = 30.0
) -> float:
    user, product = f"fresh-{uuid.uuid4().hex[:10]}", f"P{uuid.uuid4().hex[:6]}"
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "product_view",
        "user_id": user,
        "session_id": f"s-{user}",
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "properties": {"product_id": product, "category": "bench", "name": "probe", "price": 1.0},
        "context": {},
    }
    response = http.post(
        f"{collector}/v1/events",
        content=orjson.dumps(event),
        headers=headers,
    )
    response.raise_for_status()
    accepted = time.perf_counter()
    deadline = accepted + timeout_s
    while time.perf_counter() < deadline:
        body = http.get(f"{serving}/v1/users/{user}/recent", headers=READ).json()
        if product in body.get("products", []):
            return (time.perf_counter() - accepted) * 1000
        time.sleep(0.01)
    raise RuntimeError(f"probe event not visible in the API within {timeout_s:.0f}s")


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    from ingest.collector.process import CollectorProcess
    from lambdalake.local.process import ServiceProcess
    from lambdalake.local.services import LocalEngines
    from serving.process import ServingProcess

    home = Path(tempfile.mkdtemp(prefix="lambdalake-bench-serving-"))
    home.chmod(0o755)  # PostgreSQL runs unprivileged when we are root
    settings = _settings(home)
    engines = LocalEngines(settings)
    services: list[ServiceProcess] = []
    try:
        engines.up(progress=lambda msg: progress(f"  {msg}"))
        progress("filling the speed view (generated events of the last 2 hours)")
        _fill_speed(settings, 5_000 if quick else 50_000)
        now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        progress("filling the batch view (24 published hours)")
        _fill_batch(settings, [now_hour - timedelta(hours=26 - i) for i in range(24)])
        progress("starting collector, views group and serving")
        services.append(CollectorProcess(settings).start(timeout_s=60))
        services.append(ServiceProcess(settings, ["speed", "--groups", "views"], name="speed").start())
        serving = ServingProcess(settings).start(timeout_s=60)
        services.append(serving)
        seconds = 10.0 if quick else 30.0
        progress(f"{CLIENTS} concurrent clients for {seconds:.0f}s")
        latencies, errors = asyncio.run(_load(serving.url, seconds))
        progress(f"  {len(latencies)} requests, {errors} not 200, {len(latencies) / seconds:,.0f}/s")
        probes = 10 if quick else 50
        progress(f"freshness: {probes} probes, collector -> API")
        with httpx.Client(timeout=30) as http:
            _probe(
                CollectorProcess(settings).url, serving.url, http, collector_headers(settings), timeout_s=60
            )  # warm-up
            fresh = [
                _probe(CollectorProcess(settings).url, serving.url, http, collector_headers(settings))
                for _ in range(probes)
            ]
        return {
            "api_p50_ms": round(statistics.median(latencies), 1),
            "api_p99_ms": round(_percentile(latencies, 0.99), 1),
            "api_requests_per_s": round(len(latencies) / seconds),
            "api_errors": errors,
            "freshness_p50_ms": round(statistics.median(fresh), 1),
            "freshness_p99_ms": round(_percentile(fresh, 0.99), 1),
        }
    finally:
        for service in reversed(services):
            service.stop()
        engines.down(progress=lambda _msg: None)
        shutil.rmtree(home, ignore_errors=True)
