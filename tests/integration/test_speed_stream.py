"""`lambdalake speed` on kinesalite and Redis: kill -9 mid-stream then restart equals the ground
truth; a second consumer reading every shard again from TRIM_HORIZON changes no view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_lib

from lambdalake.consumer.leases import RedisLeaseStore
from lambdalake.settings import Settings
from lambdalake.stream.bus import Record
from lambdalake.stream.kinesis import KinesisBus, ensure_stream
from tests.conftest import free_port
from tests.integration.test_speed_views import (
    assert_views_equal_truth,
    generated,
    ground_truth,
    snapshot,
    speed_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _env(settings: Settings, consumer_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDALAKE_")}
    values: dict[str, Any] = {
        "profile": settings.profile,
        "home": settings.home,
        "kinesis_port": settings.kinesis_port,
        "redis_port": settings.redis_port,
        "warehouse_port": settings.warehouse_port,
        "stream_name": settings.stream_name,
        "speed_key_prefix": settings.speed_key_prefix,
        "allowed_lateness_s": settings.allowed_lateness_s,
        "speed_validate_events": settings.speed_validate_events,
        "consumer_key_prefix": consumer_prefix,
        "consumer_batch_size": 100,
        "consumer_lease_duration_s": 3,
        "consumer_shard_sync_s": 2,
        "consumer_idle_poll_s": 0.05,
        "consumer_shutdown_timeout_s": 5,
    }
    env.update({f"LAMBDALAKE_{k.upper()}": str(v) for k, v in values.items()})
    return env


def _start(
    settings: Settings, consumer_prefix: str, log: Path, groups: str = "views", port: int | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambdalake",
                "speed",
                "--groups",
                groups,
                "--metrics-port",
                str(port or free_port()),
            ],
            cwd=ROOT,
            env=_env(settings, consumer_prefix),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(condition: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


def _put_generated(
    settings: Settings, events: int, seed: int, halfway: Callable[[], None] | None = None
) -> tuple[Any, dict[str, str]]:
    """Put generated events on the test's stream (calling ``halfway`` once half of them are on it);
    the ground truth and each shard's last sequence."""
    emitted = generated(events, seed=seed)
    bus = KinesisBus(settings)
    records = []
    for i, e in enumerate(emitted):
        try:
            event = orjson.loads(e.line)
            key = str(event.get("user_id") or event.get("anonymous_id") or i)
        except (orjson.JSONDecodeError, AttributeError):
            key = str(i)
        records.append(Record(e.line, key))
    outcomes = []
    for start in range(0, len(records), 500):
        if halfway is not None and start == len(records) // 1000 * 500:
            halfway()
        outcomes += bus.put_records(settings.stream_name, records[start : start + 500])
    by_shard: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for e, outcome in zip(emitted, outcomes, strict=True):
        by_shard[outcome.shard_id].append((int(outcome.sequence_number), e))
    last = {shard: str(max(seq for seq, _ in rows)) for shard, rows in by_shard.items()}
    # event times are an hour old: the arrival cap on the watermark never binds
    ordered = {
        s: [(time.time(), e) for _, e in sorted(rows, key=lambda r: r[0])] for s, rows in by_shard.items()
    }
    return ground_truth(ordered), last


def _hwm(client: redis_lib.Redis, settings: Settings, shard: str) -> str:
    value = client.hget(f"{settings.speed_key_prefix}:views:shard:{settings.stream_name}:{shard}", "hwm")
    return value.decode() if value else ""


def _applied(client: redis_lib.Redis, settings: Settings) -> int:
    return int(client.hget(f"{settings.speed_key_prefix}:views:stats", "applied") or 0)


def test_kill_9_then_restart_equals_truth_and_a_full_replay_changes_nothing(
    engines: Settings, tmp_path: Path
) -> None:
    settings = speed_settings(engines, stream_name=f"speed-{uuid.uuid4().hex[:8]}")
    ensure_stream(settings, settings.stream_name, 2)
    client = redis_lib.Redis.from_url(settings.redis_url)
    truth, last = _put_generated(settings, 8000, seed=21)  # ≈1 s of work for one worker: killed mid-way

    def hwm(shard: str) -> str:
        return _hwm(client, settings, shard)

    def applied() -> int:
        return _applied(client, settings)

    log = tmp_path / "speed.log"
    worker = _start(settings, "kill9", log)
    try:
        _wait(lambda: applied() > 800, 60, "the first worker to apply some batches", log)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert applied() < 7000, "the worker finished before it was killed: the test proves nothing"
        worker = _start(settings, "kill9", log)
        _wait(
            lambda: all(hwm(s) == seq for s, seq in last.items()), 90, "the restarted worker to catch up", log
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert_views_equal_truth(settings, client, truth)

    before = snapshot(client, settings.speed_key_prefix)
    stats = client.hgetall(f"{settings.speed_key_prefix}:views:stats")
    store = RedisLeaseStore(client, "views", "replay")
    worker = _start(settings, "replay", log)  # fresh leases: every shard again from TRIM_HORIZON
    try:

        def replayed() -> bool:
            leases, _ = store.list_leases()
            return {lease.shard_id: lease.checkpoint for lease in leases} == last

        _wait(replayed, 90, "the replaying worker to checkpoint every shard's last record", log)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert snapshot(client, settings.speed_key_prefix) == before
    assert client.hgetall(f"{settings.speed_key_prefix}:views:stats") == stats


def test_two_workers_one_killed_the_other_takes_over_its_shards(engines: Settings, tmp_path: Path) -> None:
    settings = speed_settings(engines, stream_name=f"speed-{uuid.uuid4().hex[:8]}")
    ensure_stream(settings, settings.stream_name, 2)
    client = redis_lib.Redis.from_url(settings.redis_url)
    store = RedisLeaseStore(client, "views", "pair")
    log = tmp_path / "speed.log"
    port = free_port()
    # the survivor runs every group: alerts and enrich read the same stream beside the views
    workers = [_start(settings, "pair", log), _start(settings, "pair", log, "views,alerts,enrich", port)]
    try:

        def owners() -> set[str]:
            leases, _ = store.list_leases()
            return {lease.owner for lease in leases if lease.owner}

        # the events go on the stream once each worker holds a shard, and the second half only
        # after the kill: the survivor must take over the killed worker's shard to finish it
        _wait(lambda: len(owners()) == 2, 60, "the two workers to split the shards", log)
        killed = next(o for o in owners() if o.split(":")[1] == str(workers[0].pid))

        def kill_one() -> None:
            _wait(lambda: _applied(client, settings) >= 400, 60, "the workers to start applying", log)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(timeout=10)

        truth, last = _put_generated(settings, 8000, seed=33, halfway=kill_one)
        _wait(
            lambda: (
                killed not in owners()
                and len(owners()) == 1
                and all(_hwm(client, settings, s) == seq for s, seq in last.items())
            ),
            90,
            "the survivor to take over the killed worker's shard and finish it",
            log,
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'lambdalake_speed_events_total{group="views",outcome="applied"}' in metrics
        assert "lambdalake_consumer_records_total" in metrics
        _wait(lambda: client.xlen(f"{settings.speed_key_prefix}:orders") > 0, 30, "enriched orders", log)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)
    assert_views_equal_truth(settings, client, truth)
