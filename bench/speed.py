"""`lambdalake bench speed`: the views group's throughput and latency.

Starts its own kinesalite and redis-server in a temporary home on free ports, then measures:

- ``process_events_per_s``: the views processor over in-memory batches of ``consumer_batch_size``
  (2,000 by default) generated events (duplicates, late and malformed ones included) into Redis,
  each batch submitted while the one before is still applied (``submit_records``, as the runtime
  does while a shard has a backlog) and the last one finished: the processor's own ceiling, one
  process (the median of ``ROUNDS`` runs, one in each round below);
- ``stream_ceiling_events_per_s``: a bare read loop over every shard of a stream holding those
  events (GetRecords of ``consumer_batch_size`` records, as the worker reads, and nothing else):
  what the stream can give one reader;
- ``events_per_s_per_worker``: one consumer-runtime worker (leases, checkpoints) with the views
  processor reading that stream from TRIM_HORIZON until every record is applied, from fresh Redis
  state (the worker's CPU counted from its start, not its set-up);
- ``worker_to_ceiling``: the worker's rate over the ceiling. This machine's speed drifts within
  minutes by more than the figures' differences (a worker phase alone came out anywhere between
  10.5k and 16k events/s in one minute), so the bench alternates: ceiling, worker, ceiling, worker
  … ceiling (``ROUNDS`` workers), each round's ratio taken against the harmonic mean of the two
  ceilings around it, and reports the medians; every round's figures are in ``*_rounds`` and
  ``stream_ceilings``. Redis is emptied (and its append-only file rewritten) before each
  processing run and each worker (before the ceiling that precedes it), so every round starts
  alike and no AOF rewrite forks in the middle of one;
- ``events_per_s_all_groups``: one speed process as deployed (views, alerts and enrich, each
  reading the whole stream) until every group has applied every record;
- ``*_cpu_us_per_event``: CPU per event of each process in those phases (this one, Redis,
  kinesalite), which share the machine's cores (for the ceiling and the worker, the median over
  the rounds);
- ``e2e_p50_ms`` / ``e2e_p99_ms``: from the collector's 200 to the view changing (a probe event's
  user counter appearing in Redis), under a background load of 1k events/s posted to the same
  collector process (and 5k/s in the full run, reported as ``e2e_5k_*``). The collector, the stream,
  the worker and Redis share the machine's cores with the load generator. That worker starts on an
  empty Redis at the stream's present (AT_TIMESTAMP), so the probes and the load are all it reads.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench._common import collector_headers, free_port
from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake import heap
from lambdalake.settings import Settings
from lambdalake.stream.bus import Record, StreamRecord

SHARDS = 2
ROUNDS = 3  # worker phases, each between two ceilings


def _engines(home: Path) -> tuple[Settings, list[Any]]:
    from lambdalake.local.services import KinesisEngine, RedisEngine, start_and_wait

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        kinesis_port=free_port(),
        redis_port=free_port(),
        collector_port=free_port(),
        stream_name="bench-speed",
        speed_key_prefix="b",
        consumer_key_prefix="bench",
        consumer_idle_poll_s=0.02,
    )
    engines = [
        KinesisEngine("kinesis", "kinesis_port", settings),
        RedisEngine("redis", "redis_port", settings),
    ]
    start_and_wait(*engines)
    return settings, engines


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """CPU per event of each process of a phase: this one (reader/worker threads), Redis, kinesalite."""

    def __init__(self, engines: list[Any]) -> None:
        self.pids = {e.name: e.pid() for e in engines}
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        return {"python": time.process_time(), **{name: _cpu_s(pid) for name, pid in self.pids.items()}}

    def per_event_us(self, events: int) -> dict[str, float]:
        end = self._read()
        return {name: round((end[name] - self.start[name]) / events * 1e6, 1) for name in end}


def _lines(events: int, reference_for: Settings | None = None) -> list[tuple[bytes, str, float]]:
    """(line, partition key, arrival) of generated events; with ``reference_for``, the generator's
    products and promos go to that deployment's lake too (what enrichment joins with)."""
    start = datetime.now(UTC) - timedelta(minutes=30)
    generator = ClickstreamGenerator(GeneratorConfig(events=events, start=start, events_per_s=50))
    if reference_for is not None:
        generator.write_reference(reference_for)
    out = []
    for i, e in enumerate(generator.emitted()):
        try:
            event = orjson.loads(e.line)
            key = str(event.get("user_id") or event.get("anonymous_id") or i)
        except (orjson.JSONDecodeError, AttributeError):
            key = str(i)
        out.append((e.line, key, e.arrival_ms / 1000))
    return out


def _process_rate(settings: Settings, redis: Any, lines: list[tuple[bytes, str, float]]) -> float:
    from lambdalake.consumer.processor import BatchContext
    from speed_layer.metrics import SpeedMetrics
    from speed_layer.views import ViewsProcessor

    local = settings.model_copy(update={"speed_key_prefix": "inmem"})
    processor = ViewsProcessor(local, redis, SpeedMetrics())
    records = [StreamRecord("shard-0", str(10**20 + i), k, line, ts) for i, (line, k, ts) in enumerate(lines)]
    ctx = BatchContext("views", local.stream_name, "shard-0", "bench", 1, 0, 1)
    started = time.perf_counter()
    size = settings.consumer_batch_size
    for i in range(0, len(records), size):
        processor.submit_records(records[i : i + size], ctx)
    processor.finish()
    return len(records) / (time.perf_counter() - started)


def _stream_ceiling(settings: Settings, bus: Any, total: int) -> float:
    from lambdalake.stream.bus import TRIM_HORIZON

    started = time.perf_counter()
    read = 0
    for shard in bus.list_shards(settings.stream_name):
        iterator: str | None = bus.shard_iterator(settings.stream_name, shard.shard_id, TRIM_HORIZON)
        while iterator:
            batch = bus.read(shard.shard_id, iterator, settings.consumer_batch_size)  # as the worker reads
            read += len(batch.records)
            iterator = batch.next_iterator
            if not batch.records and batch.millis_behind_latest == 0:
                break
    assert read == total, f"read {read} of {total}"
    return read / (time.perf_counter() - started)


def _worker(settings: Settings, redis: Any) -> Any:
    """One consumer-runtime worker of the views group (not started)."""
    from lambdalake.consumer.config import ConsumerConfig
    from lambdalake.consumer.worker import ConsumerWorker
    from speed_layer.metrics import SpeedMetrics
    from speed_layer.views import ViewsProcessor, compiled_views

    metrics = SpeedMetrics()
    views = compiled_views(settings)
    config = ConsumerConfig.from_settings(settings, "views")
    return ConsumerWorker(
        settings, config, lambda: ViewsProcessor(settings, redis, metrics, shared=views), redis=redis
    )


def _worker_round(
    settings: Settings, redis: Any, engines: list[Any], last: dict[str, str], events: int
) -> tuple[float, dict[str, float]]:
    """Seconds one worker takes to apply every record of the stream, and its phase's CPU per event;
    the worker is stopped (leases released, checkpoints kept) before it returns."""
    worker = _worker(settings, redis)
    heap.settle()  # the worker's own clients exist now; `lambdalake speed` settles at the same point
    meter = _CpuMeter(engines)
    worker.start()
    started = time.perf_counter()
    try:
        _wait_applied(settings, redis, ["views"], last)
        elapsed = time.perf_counter() - started
        return elapsed, meter.per_event_us(events)
    finally:
        worker.stop()
        worker.join(30)


def _reset_redis(redis: Any) -> None:
    """Empty Redis and rewrite its append-only file (outside any timed phase): each worker round
    starts from the same state, and the file stays under the size that forks a rewrite mid-phase."""
    redis.flushall()
    redis.bgrewriteaof()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = redis.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.02)
    raise RuntimeError("Redis did not finish rewriting its append-only file within 60 s")


def _wait_applied(settings: Settings, redis: Any, groups: list[str], last: dict[str, str]) -> None:
    """Until every group's high-water mark on every shard is the shard's last record."""
    from speed_layer.keys import SpeedKeys

    keys = SpeedKeys(settings.speed_key_prefix)
    states = [(keys.shard_state(g, settings.stream_name, s), seq) for g in groups for s, seq in last.items()]
    while not all((redis.hget(k, "hwm") or b"").decode() == seq for k, seq in states):
        time.sleep(0.005)


def _all_groups(
    settings: Settings, redis: Any, engines: list[Any], last: dict[str, str], events: int
) -> tuple[float, dict[str, float]]:
    """Seconds one `lambdalake speed` process as deployed (views, alerts and enrich groups, fresh
    leases and state) takes until every group has applied every record of the stream, and the CPU
    per event of the phase from the service's start."""
    from speed_layer.service import GROUPS, SpeedService

    own = settings.model_copy(update={"speed_key_prefix": "ball", "consumer_key_prefix": "bench-all"})
    service = SpeedService(own, list(GROUPS))
    heap.settle()  # as the CLI does, once the service's clients exist
    meter = _CpuMeter(engines)
    started = time.perf_counter()
    service.start()
    try:
        _wait_applied(own, redis, list(GROUPS), last)
        return time.perf_counter() - started, meter.per_event_us(events)
    finally:
        service.stop()
        service.join(30)


def _latency(settings: Settings, redis: Any, collector: str, rate: float, seconds: float) -> list[float]:
    """collector 200 -> view changed, for probes sent among a background load of ``rate`` events/s
    posted to the same collector (batches of ``rate / 20`` events every 50 ms)."""
    import httpx

    headers = collector_headers(settings)
    template = {
        "event_type": "page_view",
        "session_id": "s-bench",
        "properties": {"path": "/", "url": "https://shop.example.com/"},
        "context": {},
    }
    stop = threading.Event()
    failures: list[str] = []

    def load() -> None:
        per_post = max(1, int(rate / 20))
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                tick = time.perf_counter()
                now = datetime.now(UTC).isoformat()
                batch = [
                    {**template, "event_id": str(uuid.uuid4()), "user_id": f"bg{i % 500}", "ts": now}
                    for i in range(per_post)
                ]
                response = http.post(f"{collector}/v1/events", content=orjson.dumps(batch), headers=headers)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    return
                stop.wait(max(0.0, 0.05 - (time.perf_counter() - tick)))

    background = threading.Thread(target=load, daemon=True)
    background.start()
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < deadline and not failures:
            user = f"probe-{uuid.uuid4().hex[:10]}"
            event = {
                **template,
                "event_id": str(uuid.uuid4()),
                "user_id": user,
                "ts": datetime.now(UTC).isoformat(),
            }
            response = http.post(f"{collector}/v1/events", content=orjson.dumps(event), headers=headers)
            response.raise_for_status()
            accepted = time.perf_counter()
            key = f"b:v:user_events:lifetime:{user}"
            while not redis.exists(key):
                if time.perf_counter() - accepted > 10:
                    raise RuntimeError(f"probe {user} not in the views within 10 s")
                time.sleep(0.001)
            latencies.append((time.perf_counter() - accepted) * 1000)
            time.sleep(0.05)
    stop.set()
    background.join()
    if failures:
        raise RuntimeError(f"the collector refused the background load: {failures[0]}")
    return latencies


def _median_cpu(phases: list[dict[str, float]]) -> dict[str, float]:
    """Each process's median CPU per event over phases measured alike."""
    return {name: round(statistics.median(p[name] for p in phases), 1) for name in phases[0]}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def run(quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    import redis as redis_lib

    from ingest.collector.process import CollectorProcess
    from lambdalake.stream.kinesis import KinesisBus, ensure_stream

    events = 20_000 if quick else 100_000
    collector = None
    home = Path(tempfile.mkdtemp(prefix="lambdalake-bench-speed-"))
    engines: list[Any] = []
    worker = None
    try:
        settings, engines = _engines(home)  # stops what it started if one engine fails
        redis = redis_lib.Redis.from_url(settings.redis_url)
        bus = KinesisBus(settings)
        ensure_stream(settings, settings.stream_name, SHARDS)
        progress(f"generating {events} events")
        lines = _lines(events, reference_for=settings)
        heap.settle()  # as `lambdalake speed` does once its clients exist (lambdalake/heap.py)
        progress("putting the events on the stream")
        last: dict[str, str] = {}
        for i in range(0, len(lines), 500):
            for outcome in bus.put_records(
                settings.stream_name, [Record(line, key) for line, key, _ in lines[i : i + 500]]
            ):
                if int(outcome.sequence_number) > int(last.get(outcome.shard_id, "0")):
                    last[outcome.shard_id] = outcome.sequence_number
        ceilings: list[float] = []
        rounds: list[tuple[float, dict[str, float]]] = []
        ceiling_cpus: list[dict[str, float]] = []
        process_rates: list[float] = []
        for r in range(ROUNDS):
            _reset_redis(redis)
            progress(f"round {r + 1} of {ROUNDS}: processing in-memory batches into Redis")
            process_rates.append(_process_rate(settings, redis, lines))
            progress(f"  {process_rates[-1]:,.0f} events/s")
            _reset_redis(redis)  # before the ceiling: nothing between it and the worker
            progress(f"round {r + 1} of {ROUNDS}: bare read loop over the shards")
            meter = _CpuMeter(engines)
            ceilings.append(_stream_ceiling(settings, bus, len(lines)))
            ceiling_cpus.append(meter.per_event_us(len(lines)))
            progress(f"  {ceilings[-1]:,.0f} events/s; CPU µs per event {ceiling_cpus[-1]}")
            progress(f"round {r + 1} of {ROUNDS}: one worker, stream -> views")
            elapsed, cpu = _worker_round(settings, redis, engines, last, len(lines))
            rounds.append((len(lines) / elapsed, cpu))
            progress(f"  {rounds[-1][0]:,.0f} events/s; CPU µs per event {cpu}")
        progress("bare read loop again, after the last worker")
        ceilings.append(_stream_ceiling(settings, bus, len(lines)))
        progress(f"  {ceilings[-1]:,.0f} events/s")
        ratios = [
            rate / (2 / (1 / before + 1 / after))
            for (rate, _), before, after in zip(rounds, ceilings, ceilings[1:], strict=False)
        ]
        progress(f"worker / ceiling by round: {', '.join(f'{x:.1%}' for x in ratios)}")
        worker_cpu = _median_cpu([cpu for _, cpu in rounds])
        progress("one speed process with every group (views, alerts, enrich), stream -> Redis")
        _reset_redis(redis)
        seconds, all_groups_cpu = _all_groups(settings, redis, engines, last, len(lines))
        all_groups_rate = len(lines) / seconds
        progress(f"  {all_groups_rate:,.0f} events/s; CPU µs per event {all_groups_cpu}")
        figures: dict[str, Any] = {
            "events_per_s_per_worker": round(statistics.median(rate for rate, _ in rounds)),
            "stream_ceiling_events_per_s": round(statistics.median(ceilings)),
            "worker_to_ceiling": round(statistics.median(ratios), 3),
            "events_per_s_per_worker_rounds": [round(rate) for rate, _ in rounds],
            "stream_ceilings": [round(c) for c in ceilings],
            "worker_to_ceiling_rounds": [round(x, 3) for x in ratios],
            "process_events_per_s": round(statistics.median(process_rates)),
            "process_events_per_s_rounds": [round(x) for x in process_rates],
            # where each phase's CPU went (all on this machine's cores): the ratio above is bounded by
            # what the worker and Redis add to the reading that the ceiling pays alone
            "ceiling_cpu_us_per_event": _median_cpu(ceiling_cpus),
            "worker_cpu_us_per_event": worker_cpu,
            # what `lambdalake capacity` should plan with: a deployed process runs all three groups
            "events_per_s_all_groups": round(all_groups_rate),
            "all_groups_cpu_us_per_event": all_groups_cpu,
        }
        _reset_redis(redis)
        # a fresh worker that starts where the stream is now: the latency probes are all it reads
        worker = _worker(
            settings.model_copy(
                update={
                    "consumer_starting_position": "AT_TIMESTAMP",
                    "consumer_starting_timestamp": datetime.now(UTC),
                }
            ),
            redis,
        )
        worker.start()
        progress("starting the collector")
        ensure_stream(settings, settings.dlq_stream_name, 1)  # the collector's health needs its DLQ
        collector = CollectorProcess(settings).start(timeout_s=60)
        for rate in (1000,) if quick else (1000, 5000):
            progress(f"collector -> view latency at {rate} events/s")
            latencies = _latency(settings, redis, collector.url, rate, 5 if quick else 15)
            suffix = "" if rate == 1000 else "_5k"
            figures[f"e2e_p50_ms{suffix}"] = _percentile(latencies, 0.5)
            figures[f"e2e_p99_ms{suffix}"] = _percentile(latencies, 0.99)
            progress(f"  p50 {figures[f'e2e_p50_ms{suffix}']} ms, p99 {figures[f'e2e_p99_ms{suffix}']} ms")
        figures["e2e_path"] = "collector 200 -> view"
        return figures
    finally:
        if collector is not None:
            collector.stop()
        if worker is not None:
            worker.stop()
            worker.join(30)
        for engine in engines:
            engine.stop()
        shutil.rmtree(home, ignore_errors=True)
