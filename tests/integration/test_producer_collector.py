"""The Python producer against the real collector process and kinesalite: every event sent is on
the stream exactly once, rejected ones are reported with the collector's reasons and dead-lettered.

Also home of the helpers the SDK integration tests share: run `lambdalake collector` for a test's
settings, and read a stream back from kinesalite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ingest.producer import Producer
from lambdalake.settings import Settings, env_name
from lambdalake.stream import TRIM_HORIZON, get_bus
from tests.conftest import free_port

pytestmark = pytest.mark.integration

COLLECTOR_START_TIMEOUT_S = 30.0
ENV_FIELDS = ("profile", "home", "kinesis_port", "redis_port", "warehouse_port", "collector_port")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see ``settings`` (and nothing from a .env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDALAKE_")}
    env.update({env_name(field): str(getattr(settings, field)) for field in ENV_FIELDS})
    env[env_name("write_keys")] = ",".join(settings.write_keys)
    env[env_name("stream_name")] = settings.stream_name
    env[env_name("dlq_stream_name")] = settings.dlq_stream_name
    return env


@contextmanager
def running_collector(engines: Settings) -> Iterator[Settings]:
    """`lambdalake collector` on a free port for ``engines``; yields its settings, stops it by pid."""
    settings = engines.model_copy(update={"collector_port": free_port()})
    log = (settings.log_dir / f"collector-test-{settings.collector_port}.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("lambdalake")), "collector"],
        env=settings_env(settings),
        cwd=settings.home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{settings.collector_port}"
    try:
        deadline = time.monotonic() + COLLECTOR_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"collector exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"collector not healthy after {COLLECTOR_START_TIMEOUT_S}s; see {log.name}"
                )
            time.sleep(0.1)
        yield settings
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def read_stream(settings: Settings, stream: str) -> list[dict[str, Any]]:
    """Every record on ``stream`` (all shards, from the start), decoded as JSON."""
    bus = get_bus(settings)
    out: list[dict[str, Any]] = []
    for shard in bus.list_shards(stream):
        iterator: str | None = bus.shard_iterator(stream, shard.shard_id, TRIM_HORIZON)
        while iterator:
            batch = bus.read(shard.shard_id, iterator, limit=10_000)
            out.extend(orjson.loads(r.data) for r in batch.records)
            if not batch.records:
                break
            iterator = batch.next_iterator
    return out


def wait_for_stream(
    settings: Settings,
    stream: str,
    match: Callable[[dict[str, Any]], bool],
    count: int,
    timeout_s: float = 20.0,
) -> list[dict[str, Any]]:
    """The records of ``stream`` that ``match``, once there are at least ``count`` (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [r for r in read_stream(settings, stream) if match(r)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


@pytest.fixture(scope="module")
def collector(engines: Settings) -> Iterator[Settings]:
    with running_collector(engines) as settings:
        yield settings


def test_every_event_reaches_the_stream_exactly_once(collector: Settings) -> None:
    run = uuid.uuid4().hex
    rejected: list[tuple[dict[str, Any], list[str]]] = []
    producer = Producer(
        settings=collector,
        batch_size=50,
        flush_interval_s=0.2,
        on_reject=lambda event, reasons: rejected.append((dict(event), reasons)),
    )
    ids = []
    for i in range(600):
        user = f"user-{i % 37}"
        if i % 100 == 0:
            ids.append(
                producer.page(f"https://shop.example/p/{i}", title="Product", user_id=user, session_id=run)
            )
        ids.append(producer.track("search", {"query": f"q{i}", "run": run}, user_id=user, session_id=run))
    ids.append(producer.identify("user-1", {"plan": "pro"}, anonymous_id=f"anon-{run}", session_id=run))
    bad_id = producer.track("purchase", {"run": run}, user_id="user-1", session_id=run)  # no order_id etc.
    assert producer.flush(timeout=30)
    stats = producer.close()

    assert (stats.submitted, stats.accepted, stats.rejected, stats.dropped, stats.pending) == (
        len(ids) + 1,
        len(ids),
        1,
        0,
        0,
    )
    assert [event["event_id"] for event, _ in rejected] == [bad_id]
    assert any("properties" in reason for reason in rejected[0][1])

    on_stream = wait_for_stream(
        collector, collector.stream_name, lambda r: r.get("session_id") == run, len(ids)
    )
    stream_ids = [r["event_id"] for r in on_stream]
    assert len(stream_ids) == len(set(stream_ids)) == len(ids)  # no duplicates, nothing lost
    assert set(stream_ids) == set(ids)
    first = next(r for r in on_stream if r["event_id"] == ids[0])
    assert first["event_type"] == "page_view"
    assert first["received_at"]
    assert first["context"]["library"]["name"] == "lambdalake-python"

    dead = wait_for_stream(
        collector, collector.dlq_stream_name, lambda r: (r.get("payload") or {}).get("event_id") == bad_id, 1
    )
    assert len(dead) == 1
    assert dead[0]["reasons"] == rejected[0][1]


def test_wrong_write_key_is_reported_as_rejected_not_retried(collector: Settings) -> None:
    reasons: list[list[str]] = []
    producer = Producer(
        settings=collector, write_key="not-a-key", on_reject=lambda _event, r: reasons.append(r)
    )
    producer.track("search", {"query": "x"}, user_id="u-wrong-key")
    stats = producer.close(timeout=10)
    assert (stats.accepted, stats.rejected, stats.requests) == (0, 1, 1)
    assert reasons[0][0].startswith("HTTP 401")
