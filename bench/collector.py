"""`lambdalake bench collector`: events/s one collector process accepts, and its request latency.

Starts its own kinesalite in a temporary home on free ports (never a running demo's), then one
collector process (one uvicorn worker, so one core at most) and posts batches of 100 valid events
from a few client threads. Measured twice: into kinesalite (``events_per_s``, ``p50_ms``,
``p99_ms``), then with ``collector_bus=noop`` (``noop_events_per_s``, and ``noop_p50_ms`` /
``noop_p99_ms``): the collector's own ceiling, without the stream's cost. The client runs on the
same machine and takes some of its CPU, so the figures are a floor.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench._common import free_port
from ingest.collector.process import CollectorProcess
from lambdalake.errors import LambdalakeError
from lambdalake.local.services import KinesisEngine, start_and_wait
from lambdalake.settings import Settings

BATCH_SIZE = 100
CLIENT_THREADS = 6
WRITE_KEY = "bench-write-key"
EVENT_TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    ("page_view", {"url": "https://shop.example/c/shoes", "path": "/c/shoes", "title": "Shoes"}),
    ("product_view", {"product_id": "p-123", "category": "shoes", "price": 59.9}),
    ("add_to_cart", {"product_id": "p-123", "quantity": 1, "price": 59.9, "cart_id": "c-1"}),
    ("search", {"query": "running shoes", "results_count": 42}),
    (
        "purchase",
        {
            "order_id": "o-1",
            "amount": 119.8,
            "currency": "EUR",
            "items": [{"product_id": "p-123", "quantity": 2, "price": 59.9, "category": "shoes"}],
        },
    ),
]


def make_bodies(requests: int) -> list[bytes]:
    """Request bodies of BATCH_SIZE valid events each, unique event_ids, built before timing."""
    bodies = []
    for r in range(requests):
        events = []
        for i in range(BATCH_SIZE):
            event_type, properties = EVENT_TEMPLATES[(r + i) % len(EVENT_TEMPLATES)]
            events.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": event_type,
                    "user_id": f"user-{(r * BATCH_SIZE + i) % 5000}",
                    "session_id": f"s-{r % 300}",
                    "ts": "2026-11-22T10:00:00.000Z",
                    "properties": properties,
                    "context": {"ip": "203.0.113.7", "user_agent": "bench/1.0", "locale": "en-GB"},
                }
            )
        bodies.append(orjson.dumps(events))
    return bodies


def load(url: str, bodies: list[bytes]) -> dict[str, float]:
    """Post every body from CLIENT_THREADS threads; events/s accepted and request latency."""
    latencies: list[float] = []
    accepted = 0
    failures: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(len(bodies)))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {WRITE_KEY}"}

    def worker() -> None:
        nonlocal accepted
        with httpx.Client(base_url=url, timeout=60.0, headers=headers) as client:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                start = time.perf_counter()
                response = client.post("/v1/events", content=bodies[index])
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if response.status_code == 200:
                        accepted += response.json()["accepted"]
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(CLIENT_THREADS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise LambdalakeError(f"{len(failures)} requests failed during the benchmark, e.g. {failures[0]}")
    expected = len(bodies) * BATCH_SIZE
    if accepted != expected:
        raise LambdalakeError(f"the collector accepted {accepted} of {expected} valid events")
    cuts = statistics.quantiles(latencies, n=100)
    return {"events_per_s": accepted / wall, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def _measure(settings: Settings, bodies: list[bytes], warmup: list[bytes]) -> dict[str, float]:
    with CollectorProcess(settings) as collector:
        load(collector.url, warmup)
        return load(collector.url, bodies)


def _summary(figures: dict[str, float]) -> str:
    return (
        f"  {figures['events_per_s']:,.0f} events/s, "
        f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms"
    )


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    requests = 150 if quick else 1000
    home = Path(tempfile.mkdtemp(prefix="lambdalake-bench-collector-"))
    settings = Settings(
        _env_file=None,
        profile="local",
        home=home,
        kinesis_port=free_port(),
        collector_port=free_port(),
        write_keys=[WRITE_KEY],
        collector_workers=1,
    )
    kinesis = KinesisEngine("kinesis", "kinesis_port", settings)
    try:
        progress(f"kinesalite: starting on 127.0.0.1:{settings.kinesis_port} (home {home})")
        start_and_wait(kinesis)
        kinesis.after_start()
        progress(f"building {requests} requests of {BATCH_SIZE} events")
        bodies, warmup = make_bodies(requests), make_bodies(20)
        progress("collector -> kinesalite")
        stream = _measure(settings, bodies, warmup)
        progress(_summary(stream))
        progress("collector -> noop bus (the collector's own ceiling)")
        noop_settings = settings.model_copy(update={"collector_bus": "noop", "collector_port": free_port()})
        noop = _measure(noop_settings, make_bodies(requests * 3), warmup)
        progress(_summary(noop))
    finally:
        kinesis.stop()
        shutil.rmtree(home, ignore_errors=True)
    return {
        "events_per_s": round(stream["events_per_s"]),
        "noop_events_per_s": round(noop["events_per_s"]),
        "p50_ms": round(stream["p50_ms"], 2),
        "p99_ms": round(stream["p99_ms"], 2),
        "noop_p50_ms": round(noop["p50_ms"], 2),
        "noop_p99_ms": round(noop["p99_ms"], 2),
        "batch_size": BATCH_SIZE,
        "requests": requests,
        "workers": 1,
    }
