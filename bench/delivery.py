"""`lambdalake bench delivery`: lake delivery throughput and latency on local engines.

- ``stream_ceiling_events_per_s``: a bare read loop over the same shards (one thread per shard,
  as the runtime reads), decoding nothing: what the stream alone gives one process.
- ``events_per_s``: one delivery worker draining the same backlog into Parquet (validate, cut by
  event hour, encode, publish, mark hours) — the goal is at least 80% of the ceiling.
- ``bytes_per_event``: Parquet bytes in the raw zone per row (settings' compression).
- ``put_to_durable_p99_s``: at a steady put rate, from each record's arrival in the stream to its
  file being published, with the settings' buffering hints (Firehose delivers within ~1.5× its
  interval).

Runs its own kinesalite and Redis (temp home, free ports); the lake is a temp directory.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench._common import free_port
from ingest.delivery.service import DeliveryService
from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake import lake
from lambdalake.contract import partition_key
from lambdalake.local.services import LocalEngines
from lambdalake.settings import Settings
from lambdalake.stream import TRIM_HORIZON, Record, StreamBus, get_bus

NEEDED_ENGINES = ("kinesis", "redis")  # delivery needs no warehouse


def _records(events: int, seed: int) -> list[Record]:
    out = []
    for emitted in ClickstreamGenerator(GeneratorConfig(events=events, seed=seed)).emitted():
        try:
            key = partition_key(orjson.loads(emitted.line))
        except (orjson.JSONDecodeError, AttributeError):
            key = str(emitted.order)
        out.append(Record(emitted.line, key))
    return out


def _put(settings: Settings, bus: StreamBus, records: list[Record]) -> None:
    for i in range(0, len(records), 500):
        bus.put_records(settings.stream_name, records[i : i + 500])


def bare_read(settings: Settings, bus: StreamBus, expected: int) -> float:
    """Seconds for one thread per shard to read the whole backlog with the runtime's batch size."""
    shards = [s.shard_id for s in bus.list_shards(settings.stream_name)]
    counts = dict.fromkeys(shards, 0)

    def read(shard_id: str) -> None:
        iterator: str | None = bus.shard_iterator(settings.stream_name, shard_id, TRIM_HORIZON)
        while iterator is not None:
            batch = bus.read(shard_id, iterator, settings.delivery_buffer_records)
            counts[shard_id] += len(batch.records)
            if not batch.records and batch.millis_behind_latest == 0:
                return
            iterator = batch.next_iterator

    started = time.perf_counter()
    threads = [threading.Thread(target=read, args=(s,)) for s in shards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if sum(counts.values()) != expected:
        raise RuntimeError(f"bare read saw {sum(counts.values())} records, expected {expected}")
    return elapsed


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    backlog = 20_000 if quick else 100_000
    steady_rate, steady_s = (500, 10) if quick else (1000, 30)
    home = Path(tempfile.mkdtemp(prefix="lambdalake-bench-delivery-"))
    home.chmod(0o755)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        profile="local",
        home=home,
        kinesis_port=free_port(),
        redis_port=free_port(),
        warehouse_port=free_port(),
        consumer_idle_poll_s=0.05,
    )
    engines = LocalEngines(settings)
    engines.engines = [e for e in engines.engines if e.name in NEEDED_ENGINES]
    service: DeliveryService | None = None
    try:
        engines.up(progress=progress)
        bus = get_bus(settings)
        progress(f"generating and putting {backlog:,} events on {settings.stream_shards} shards")
        _put(settings, bus, _records(backlog, seed=1))

        ceiling = backlog / bare_read(settings, bus, backlog)
        progress(f"bare read: {ceiling:,.0f} records/s")

        # Draining a backlog, batches are full and the interval never fires, except for each
        # shard's last, partial batch, which would wait out the interval: measure with interval 0.
        drain = settings.model_copy(update={"delivery_buffer_interval_s": 0.0})
        service = DeliveryService(drain, archive_errors=False, close_hours=False)
        stats = service.stats
        started = time.perf_counter()
        service.start()
        _wait(lambda: stats.rows + stats.errors >= backlog, 600, "the backlog to be delivered")
        delivered_s = time.perf_counter() - started
        service.stop()
        service.join(30)
        rate = backlog / delivered_s
        # The machine may be shared: read again and keep the faster read as the ceiling.
        ceiling = max(ceiling, backlog / bare_read(settings, bus, backlog))
        progress(f"bare read, again: ceiling {ceiling:,.0f} records/s")
        progress(f"delivery: {rate:,.0f} events/s into Parquet ({rate / ceiling:.0%} of the bare read)")
        raw = [
            size
            for uri, size in lake.list_files(lake.join(settings.lake_uri, "raw/events"), settings)
            if uri.endswith(".parquet")
        ]
        bytes_per_event = sum(raw) / stats.rows
        progress(f"raw zone: {len(raw)} files, {sum(raw) / 1e6:.1f} MB, {bytes_per_event:.0f} bytes/event")

        progress(
            f"steady load: {steady_rate}/s for {steady_s}s with buffering "
            f"{settings.delivery_buffer_mib:g} MiB / {settings.delivery_buffer_interval_s:g} s"
        )
        steady = _records(steady_rate * steady_s, seed=2)
        service = DeliveryService(settings, archive_errors=False, close_hours=False).start()
        stats = service.stats
        before = 0
        for second in range(steady_s):
            tick = time.monotonic()
            _put(settings, bus, steady[second * steady_rate : (second + 1) * steady_rate])
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        _wait(
            lambda: stats.rows + stats.errors >= before + len(steady), 120, "the steady load to be delivered"
        )
        latencies = sorted(stats.latencies_s)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        progress(f"put -> durable: p50 {statistics.median(latencies):.2f} s, p99 {p99:.2f} s")
    finally:
        if service is not None:
            service.stop()
            service.join(30)
        engines.down(progress=progress)
        shutil.rmtree(home, ignore_errors=True)
    return {
        "events_per_s": round(rate),
        "stream_ceiling_events_per_s": round(ceiling),
        "bytes_per_event": round(bytes_per_event, 1),
        "put_to_durable_p99_s": round(p99, 2),
        "backlog_events": backlog,
        "shards": settings.stream_shards,
        "workers": 1,
        "buffer_mib": settings.delivery_buffer_mib,
        "buffer_interval_s": settings.delivery_buffer_interval_s,
        "compression": settings.delivery_compression,
    }
