"""`lambdalake bench backfill`: a long sparse backfill, the way `lambdalake batch --from X --to Y` runs it.

Issue 6: importing history lands months of events in thousands of hourly partitions with little
data each, and must run as a few Spark jobs over many hours. This benchmark builds a self-contained
environment in a temporary home: its own lake directory, and its own redis-server (delivery's hour
state) and PostgreSQL (warehouse and batch watermark) on free loopback ports. Then:

1. history: N hours of event time (full: 30 days = 720 hours; ``--quick``: 48 hours) with about 50
   generated events an hour (duplicates and late ones included; the malformed ones the collector
   would reject left out) except quiet nights (``QUIET_HOURS``, 01:00–05:59 UTC: no events, so
   the hours close empty, as a small shop's history has them), as stream records in arrival order
   over two shards, go through delivery's own code: ``DeliveryProcessor`` (one flush per shard of
   ``delivery_buffer_records`` records: an import arriving at once) writes the raw Parquet files, then
   ``HourCloser.close_hour`` writes each hour's ``_manifest.json``. The reference CSVs too;
2. it times ``batch.pipeline.process_hours`` over the whole range (Spark session start included,
   as in the CLI): plan, Spark, gates, warehouse publish, watermark; then stops Spark and the
   engines and deletes its home.

Figures: ``hours``, ``events`` (raw rows in the manifests), ``raw_files``, ``seconds``,
``seconds_per_hour`` and ``six_months_minutes`` = seconds_per_hour × 4,380 / 60. The last is an
EXTRAPOLATION of this run's per-hour rate to six months of hours (4,380), not a measurement: fixed
costs (JVM and session start, GE context) are spread over more hours in a longer run, while the
per-hour costs (planning, gates' per-hour reads, publishing) scale linearly.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.settings import Settings
from lambdalake.stream.bus import StreamRecord

START = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS_PER_HOUR = 50
SHARDS = 2
SEED = 7
SEQUENCE_BASE = 10**20  # Kinesis sequence numbers are wide decimals
SIX_MONTHS_HOURS = 4_380
ENGINES = ("redis", "warehouse")  # delivery's hour state; warehouse + batch watermark
PUBLISHED_EVERY = 100  # progress: one "published" line in this many
QUIET_HOURS = frozenset(range(1, 6))  # UTC hours without events: closed, empty hours in the history


def _config(hours: int, per_hour: int, start: datetime) -> GeneratorConfig:
    """The generator's traffic runs a little faster than ``events_per_s`` (≈53 an hour for 50): it
    is asked for a fifth more events than the hours hold, and ``history`` cuts at the range's end."""
    events = hours * per_hour * 6 // 5 + per_hour
    return GeneratorConfig(events=events, seed=SEED, start=start, events_per_s=per_hour / 3600)


def _event_time(event: Any) -> datetime | None:
    value = event.get("ts") if isinstance(event, dict) else None
    try:
        moment = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def shard_name(index: int) -> str:
    return f"shardId-{index:012d}"


def history(
    hours: int, per_hour: int = EVENTS_PER_HOUR, shards: int = SHARDS, start: datetime = START
) -> list[StreamRecord]:
    """Generated events of [start, start + hours) as a stream hands them to delivery: what the
    collector accepts (the event contract; its duplicates and late events included, its malformed
    lines not), in arrival order, on the shard their partition key (user, else anonymous id) hashes
    to, with increasing sequence numbers per shard. Events timed after the range or in a quiet hour
    are left out."""
    from lambdalake.contract import EventValidator

    validator = EventValidator()
    end = start + timedelta(hours=hours)
    counters = [0] * shards
    out = []
    for emitted in ClickstreamGenerator(_config(hours, per_hour, start)).emitted():
        try:
            event = orjson.loads(emitted.line)
        except orjson.JSONDecodeError:
            continue
        if validator.validate(event):
            continue  # the collector answers 400: it never reaches the stream
        ts = _event_time(event)
        if ts is None or not start <= ts < end or ts.hour in QUIET_HOURS:
            continue
        key = str(event.get("user_id") or event.get("anonymous_id"))
        shard = zlib.crc32(key.encode()) % shards
        counters[shard] += 1
        out.append(
            StreamRecord(
                shard_name(shard),
                str(SEQUENCE_BASE + counters[shard]),
                key,
                emitted.line,
                emitted.arrival_ms / 1000,
            )
        )
    return out


def figures(hours: int, events: int, raw_files: int, seconds: float) -> dict[str, Any]:
    per_hour = seconds / hours
    return {
        "hours": hours,
        "events": events,
        "raw_files": raw_files,
        "seconds": round(seconds, 1),
        "seconds_per_hour": round(per_hour, 3),
        "six_months_minutes": round(per_hour * SIX_MONTHS_HOURS / 60, 1),  # extrapolated
    }


def _settings(home: Path) -> Settings:
    """Settings of the temporary home (free ports, as ``bench serving`` picks them); its lake is
    the home's, whatever the environment says."""
    from bench.serving import _settings as engine_settings

    return engine_settings(home).model_copy(update={"lake_uri_override": None})


def deliver(settings: Settings, records: list[StreamRecord]) -> tuple[int, int]:
    """Delivery's processor and closer over the records: each shard's records in flushes of
    ``delivery_buffer_records``, then every hour written closed with its manifest (version 1).
    Returns (raw rows, raw files) as the manifests count them."""
    import redis as redis_lib

    from ingest.delivery.manifest import HourCloser, HourState
    from ingest.delivery.processor import DeliveryProcessor, DeliveryStats
    from lambdalake.consumer import BatchContext
    from lambdalake.stream.bus import TRIM_HORIZON

    client = redis_lib.Redis.from_url(settings.redis_url)
    try:
        state = HourState(client, settings.delivery_key_prefix)
        stats = DeliveryStats()
        by_shard: dict[str, list[StreamRecord]] = defaultdict(list)
        for record in records:
            by_shard[record.shard_id].append(record)
        flush = settings.delivery_buffer_records
        for shard, rows in sorted(by_shard.items()):
            processor = DeliveryProcessor(settings, state, stats)
            processor.initialize(shard, TRIM_HORIZON)
            for i in range(0, len(rows), flush):
                behind = 0 if i + flush >= len(rows) else 1
                ctx = BatchContext(
                    settings.delivery_group, settings.stream_name, shard, "bench", 1, behind, 1
                )
                processor.process_records(rows[i : i + flush], ctx)
            processor.shutdown("TERMINATE")
        watermark_ms = max(mark.wm_ms for mark in state.marks().values())
        closer = HourCloser(settings, state)
        now = datetime.now(UTC)
        rows_total = files_total = 0
        for key, generation in sorted(state.dirty().items()):
            manifest = closer.close_hour(key, generation, watermark_ms, now)
            if manifest is None:
                raise RuntimeError(f"hour {key} was not closed")
            rows_total += int(manifest["rows"])
            files_total += len(manifest["files"])
        return rows_total, files_total
    finally:
        client.close()


def write_reference(settings: Settings, hours: int) -> None:
    """The products and promos CSVs of the generator that wrote the history."""
    ClickstreamGenerator(_config(hours, EVENTS_PER_HOUR, START)).write_reference(settings)


def _step(progress: Callable[[str], None], started: float) -> Callable[[str], None]:
    """process_hours' progress with the seconds since the clock started (one published line in 100)."""
    published = 0

    def step(message: str) -> None:
        nonlocal published
        if message.startswith("published "):
            published += 1
            if published != 1 and published % PUBLISHED_EVERY:
                return
            message = f"{message} [{published} published]"
        progress(f"  {time.perf_counter() - started:7.1f}s  {message}")

    return step


def _stop_spark(session: Any, had_gateway: bool) -> None:
    """Stop the session, and the JVM too when this run launched it (in-process callers)."""
    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    if had_gateway or gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is not None:  # the JVM exits when its stdin closes
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(quick: bool, progress: Callable[[str], None], hours: int | None = None) -> dict[str, Any]:
    from batch.pipeline import process_hours, spark_for
    from lambdalake.local.services import LocalEngines

    count = hours or (48 if quick else 720)
    home = Path(tempfile.mkdtemp(prefix="lambdalake-bench-backfill-"))
    home.chmod(0o755)  # PostgreSQL runs unprivileged when we are root
    settings = _settings(home)
    engines = LocalEngines(settings)
    engines.engines = [e for e in engines.engines if e.name in ENGINES]
    session, had_gateway = None, False
    try:
        engines.up(progress=lambda msg: progress(f"  {msg}"))
        progress(f"history: {count} hours from {START:%Y-%m-%dT%H}, about {EVENTS_PER_HOUR} events an hour")
        records = history(count)
        events, raw_files = deliver(settings, records)
        write_reference(settings, count)
        progress(
            f"  {len(records):,} records -> {events:,} raw rows in {raw_files:,} files, {count} manifests"
        )
        from pyspark import SparkContext

        had_gateway = SparkContext._gateway is not None  # a JVM of the caller's: leave it running
        progress(f"process_hours {START:%Y-%m-%dT%H} .. +{count} hours")
        started = time.perf_counter()
        session = spark_for(settings)
        progress(f"  {time.perf_counter() - started:7.1f}s  Spark session ready")
        report = process_hours(
            settings, START, START + timedelta(hours=count), _step(progress, started), spark=session
        )
        seconds = time.perf_counter() - started
        done = len(report.processed) + len(report.empty)
        if done != count:
            raise RuntimeError(f"{done} of {count} hours processed (waiting: {len(report.waiting)})")
        progress(f"{count} hours ({len(report.processed)} with data) in {seconds:.1f} s")
        return figures(count, events, raw_files, seconds)
    finally:
        if session is not None:
            _stop_spark(session, had_gateway)
        engines.down(progress=lambda _msg: None)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(description="Backfill benchmark over a chosen number of hours.")
    parser.add_argument("--hours", type=int, default=None, help="Hours of history (default 720; quick 48).")
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    result = run(arguments.quick, lambda msg: print(msg, file=sys.stderr), hours=arguments.hours)
    print(json.dumps(result))
