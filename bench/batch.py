"""`lambdalake bench batch`: events/s through clean + hourly aggregates for one hour of events.

Generates the hour's events (1M; quick: 100k) into a temporary lake as raw Parquet, then times
the batch layer's hourly pipeline on it in local mode. Peak RSS counts this process and the
Spark JVM it starts (the JVM does the work).
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.settings import get_settings

HOUR = datetime(2026, 1, 1, tzinfo=UTC)
_COLUMNS = ("event_id", "event_type", "user_id", "anonymous_id", "session_id")


def _write_hour(lake: Path, events: int, progress: Callable[[str], None]) -> int:
    """The generated events squeezed into one hour of event time, as raw Parquet files."""
    config = GeneratorConfig(events=events, seed=11, events_per_s=events / 3000, malformed_rate=0.0)
    folder = lake / f"raw/events/year={HOUR:%Y}/month={HOUR:%m}/day={HOUR:%d}/hour={HOUR:%H}"
    folder.mkdir(parents=True)
    rows: dict[str, list[object]] = {
        name: [] for name in (*_COLUMNS, "ts", "received_at", "properties", "context")
    }
    written = part = 0
    end = HOUR + timedelta(hours=1)
    for line in ClickstreamGenerator(config).lines():
        event = orjson.loads(line)
        ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
        if ts >= end:
            continue
        for name in _COLUMNS:
            rows[name].append(event.get(name))
        rows["ts"].append(ts)
        rows["received_at"].append(ts)
        rows["properties"].append(json.dumps(event["properties"]))
        rows["context"].append(json.dumps(event["context"]))
        written += 1
        if len(rows["ts"]) >= 200_000:
            pq.write_table(pa.table(rows), folder / f"part-{part:04d}.parquet")
            rows = {name: [] for name in rows}
            part += 1
    if rows["ts"]:
        pq.write_table(pa.table(rows), folder / f"part-{part:04d}.parquet")
    progress(f"wrote {written:,} events of {HOUR:%Y-%m-%dT%H} to {folder}")
    return written


def _peak_rss_mb(jvm_pid: int | None) -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if jvm_pid is None:
        return round(own, 1)
    for line in Path(f"/proc/{jvm_pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(own + int(line.split()[1]) / 1024, 1)
    return round(own, 1)


def run(quick: bool, progress: Callable[[str], None], events: int | None = None) -> dict[str, float]:
    from lambdalake.metrics.catalogue import load_catalogue
    from spark_jobs.run import clean_hours, hourly_tables
    from spark_jobs.session import spark_session

    count = events or (100_000 if quick else 1_000_000)
    settings = get_settings()
    work = Path(tempfile.mkdtemp(prefix="lambdalake-bench-batch-"))
    try:
        written = _write_hour(work / "lake", count, progress)
        spark = spark_session(settings, "lambdalake-bench-batch")
        lake = (work / "lake").as_uri()
        interval = [HOUR]
        catalogue = load_catalogue(settings.metric_catalogues)
        progress("clean + hourly aggregates")
        started = time.perf_counter()
        clean_hours(spark, lake, interval, settings.batch_dedupe_lookback_hours)
        hourly_tables(spark, lake, interval, catalogue)
        seconds = time.perf_counter() - started
        jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())
        peak = _peak_rss_mb(jvm_pid)
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"{written:,} events in {seconds:.1f} s")
    return {"events": written, "events_per_s": round(written / seconds), "peak_rss_mb": peak}


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Batch benchmark with a chosen event count.")
    parser.add_argument("--events", type=int, default=1_000_000)
    arguments = parser.parse_args()
    figures = run(quick=False, progress=lambda msg: print(msg, file=sys.stderr), events=arguments.events)
    print(json.dumps(figures))
