"""Consumer runtime against real kinesalite and Redis: no loss, no double count, leases, DLQ."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as redis_lib

from lambdalake.consumer import ConsumerConfig, ConsumerMetrics, ConsumerWorker, start_metrics_server
from lambdalake.consumer.checkpoints import is_sequence
from lambdalake.settings import Settings
from lambdalake.stream import TRIM_HORIZON, StreamBus, get_bus
from lambdalake.stream.bus import Record
from lambdalake.stream.kinesis import ensure_stream
from tests.conftest import free_port
from tests.integration.consumer_worker import (
    Ledger,
    LedgerProcessor,
    leases,
    lifecycle,
    make_events,
    order_of,
    put_events,
)

pytestmark = pytest.mark.integration

WORKER_SCRIPT = Path(__file__).with_name("consumer_worker.py")
LEASE_S = 2.0  # the kill test measures takeover against it
IN_PROCESS_LEASE_S = 6.0  # roomy, so a loaded CI machine never expires a lease mid-test


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def redis(engines: Settings) -> Iterator[Any]:
    client = redis_lib.Redis.from_url(engines.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def bus(engines: Settings) -> StreamBus:
    return get_bus(engines)


@pytest.fixture
def names(engines: Settings) -> dict[str, str]:
    """A fresh stream (4 shards), DLQ stream, group and Redis namespace for one test."""
    tag = uuid.uuid4().hex[:8]
    stream, dlq = f"consumer-test-{tag}", f"consumer-dlq-{tag}"
    ensure_stream(engines, stream, 4)
    ensure_stream(engines, dlq, 1)
    return {"stream": stream, "dlq": dlq, "group": f"g{tag}", "ns": f"test:{tag}"}


def make_config(settings: Settings, names: dict[str, str], **overrides: Any) -> ConsumerConfig:
    values: dict[str, Any] = {
        "stream": names["stream"],
        "on_failure_stream": names["dlq"],
        "lease_duration_s": IN_PROCESS_LEASE_S,
        "idle_poll_s": 0.05,
        "shard_sync_s": 1.0,
        "retry_backoff_s": 0.01,
        "retry_backoff_cap_s": 0.05,
        "batch_size": 100,
    }
    values.update(overrides)
    return ConsumerConfig.from_settings(settings, names["group"], **values)


def start_worker(
    settings: Settings,
    redis: Any,
    names: dict[str, str],
    metrics: ConsumerMetrics | None = None,
    **overrides: Any,
) -> ConsumerWorker:
    config = make_config(settings, names, **overrides)
    return ConsumerWorker(
        settings, config, lambda: LedgerProcessor(redis, names["ns"]), redis=redis, metrics=metrics
    ).start()


def stop(worker: ConsumerWorker) -> None:
    worker.stop()
    worker.join(15)


def assert_exactly_once(redis: Any, ns: str, expected: dict[str, list[str]], hwm_alone: bool = True) -> None:
    ledger = Ledger.read(redis, ns)
    all_ids = {i for ids in expected.values() for i in ids}
    assert set(ledger.applied) == all_ids, "every record applied (no loss)"
    assert set(ledger.applied.values()) == {1}, "no event applied twice"
    if hwm_alone:
        assert set(ledger.hits.values()) == {1}, "the per-shard hwm alone made redeliveries no-ops"
    for key, ids in expected.items():
        assert order_of(redis, ns, key) == ids, f"per-key order for {key}"


def read_dlq(bus: StreamBus, stream: str, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every DLQ record, following iterators: a GetRecords call may return nothing before the data."""
    iterator = bus.shard_iterator(stream, "shardId-000000000000", TRIM_HORIZON)
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(letters) < want and time.monotonic() < deadline:
        batch = bus.read("shardId-000000000000", iterator, 1000)
        letters += [orjson.loads(r.data) for r in batch.records]
        iterator = batch.next_iterator or iterator
        if not batch.records:
            time.sleep(0.05)
    time.sleep(0.2)
    letters += [orjson.loads(r.data) for r in bus.read("shardId-000000000000", iterator, 1000).records]
    return letters


def every_shard_checkpointed(settings: Settings, redis: Any, names: dict[str, str], shards: int) -> bool:
    """One read of the lease table: before the worker creates its leases the table is empty, and
    every lease of an empty table is checkpointed."""
    state = leases(redis, names["group"], settings)
    return len(state) == shards and all(is_sequence(lease.checkpoint) for lease in state)


def applied_count(redis: Any, ns: str) -> int:
    return int(redis.hlen(f"{ns}:applied"))


def test_every_record_processed_and_restart_resumes_from_checkpoint(
    engines: Settings, redis: Any, bus: StreamBus, names: dict[str, str]
) -> None:
    first = make_events(2000)
    expected = put_events(bus, names["stream"], first)
    metrics = ConsumerMetrics()
    worker = start_worker(engines, redis, names, metrics=metrics)
    try:
        wait_until(lambda: applied_count(redis, names["ns"]) == 2000, 30, "first 2000 records")
        wait_until(lambda: len(worker.owned_shards()) == 4, 5, "one worker to own all 4 shards")
    finally:
        stop(worker)
    state = leases(redis, names["group"], engines)
    assert len(state) == 4
    assert all(lease.owner == "" for lease in state), "a clean stop releases every lease"
    assert all(is_sequence(lease.checkpoint) for lease in state)
    processed = sum(
        metrics.registry.get_sample_value(
            "lambdalake_consumer_records_total", {"group": names["group"], "shard": lease.shard_id}
        )
        or 0
        for lease in state
    )
    assert processed == 2000
    delivered_before = Ledger.read(redis, names["ns"]).delivered
    assert delivered_before == 2000  # a single clean run redelivers nothing

    second = make_events(500)
    for key, ids in put_events(bus, names["stream"], second).items():
        expected.setdefault(key, []).extend(ids)
    worker = start_worker(engines, redis, names)
    try:
        wait_until(lambda: applied_count(redis, names["ns"]) == 2500, 30, "the next 500 records")
    finally:
        stop(worker)
    assert Ledger.read(redis, names["ns"]).delivered == delivered_before + 500, (
        "restart resumes after checkpoint"
    )
    assert_exactly_once(redis, names["ns"], expected)


def test_at_timestamp_starts_at_the_first_record_at_or_after_it_and_at_the_tip_past_the_last(
    engines: Settings, redis: Any, bus: StreamBus, names: dict[str, str]
) -> None:
    put_events(bus, names["stream"], make_events(300))
    time.sleep(0.05)  # kinesalite stamps arrival to the millisecond
    mark = datetime.now(UTC)
    time.sleep(0.05)
    expected = put_events(bus, names["stream"], make_events(200))
    worker = start_worker(engines, redis, names, starting_position="AT_TIMESTAMP", starting_timestamp=mark)
    try:
        wait_until(lambda: applied_count(redis, names["ns"]) == 200, 30, "the 200 records after the mark")
        time.sleep(0.3)  # and nothing from before it
    finally:
        stop(worker)
    assert_exactly_once(redis, names["ns"], expected)

    # A timestamp past every record (a consumer started AT_TIMESTAMP "now"): Kinesis answers with
    # the tip, and the records that come later are read. kinesalite alone hung GetShardIterator
    # until the client's 10 s read timeout, on every retry (lambdalake/local/kinesalite.js).
    tip = {**names, "group": names["group"] + "tip", "ns": names["ns"] + ":tip"}
    worker = start_worker(
        engines, redis, tip, starting_position="AT_TIMESTAMP", starting_timestamp=datetime.now(UTC)
    )
    try:
        wait_until(lambda: len(worker.owned_shards()) == 4, 5, "the worker to own all 4 shards")
        later = put_events(bus, names["stream"], make_events(100))
        wait_until(lambda: applied_count(redis, tip["ns"]) == 100, 8, "the 100 records put after the start")
        time.sleep(0.3)
    finally:
        stop(worker)
    assert_exactly_once(redis, tip["ns"], later)


def test_latest_skips_what_came_before_and_reads_what_comes_after(
    engines: Settings, redis: Any, bus: StreamBus, names: dict[str, str]
) -> None:
    before = put_events(bus, names["stream"], make_events(300))
    worker = start_worker(engines, redis, names, starting_position="LATEST")
    try:
        # LATEST is where a shard is when its consumer asks for an iterator, a moment after the
        # start: markers on every shard, sent again until one per shard is applied, say they all have
        sent: list[tuple[str, str]] = []  # (shard, event_id)
        deadline = time.monotonic() + 15
        while True:
            applied = Ledger.read(redis, names["ns"]).applied
            if len({shard for shard, event_id in sent if event_id in applied}) == 4:
                break
            assert time.monotonic() < deadline, "no marker applied on some shard within 15 s"
            markers = make_events(40, users=40)
            outcomes = bus.put_records(
                names["stream"], [Record(orjson.dumps(e), e["user_id"]) for e in markers]
            )
            sent += [(o.shard_id, e["event_id"]) for o, e in zip(outcomes, markers, strict=True)]
            time.sleep(0.2)
        after = put_events(bus, names["stream"], make_events(200))
        after_ids = {i for ids in after.values() for i in ids}
        wait_until(
            lambda: after_ids <= Ledger.read(redis, names["ns"]).applied.keys(),
            30,
            "the 200 records put after",
        )
        time.sleep(0.3)
    finally:
        stop(worker)
    applied = Ledger.read(redis, names["ns"]).applied
    assert not {i for ids in before.values() for i in ids} & applied.keys(), "nothing from before the start"
    assert set(applied.values()) == {1}, "nothing applied twice"
    for key, ids in after.items():
        assert [i for i in order_of(redis, names["ns"], key) if i in after_ids] == ids, f"order for {key}"


def test_poison_record_goes_to_dlq_bisected_and_the_shard_moves_on(
    engines: Settings, redis: Any, bus: StreamBus, names: dict[str, str]
) -> None:
    events = make_events(400, poison=[150])
    poison_id = events[150]["event_id"]
    expected = put_events(bus, names["stream"], events)
    expected[events[150]["user_id"]].remove(poison_id)
    metrics = ConsumerMetrics()
    worker = start_worker(engines, redis, names, metrics=metrics, max_retry_attempts=2, batch_size=100)
    try:
        wait_until(lambda: applied_count(redis, names["ns"]) == 399, 30, "every good record")
    finally:
        stop(worker)
    assert_exactly_once(redis, names["ns"], expected)
    sizes = [int(s) for s in redis.lrange(f"{names['ns']}:poison_batch_sizes", 0, -1)]
    assert sizes[0] > 1
    assert sizes[-3:] == [1, 1, 1], "bisect narrowed to the poison record alone, then 2 retries"
    assert sizes == sorted(sizes, reverse=True)

    letters = read_dlq(bus, names["dlq"], 1)
    assert len(letters) == 1
    letter = letters[0]
    assert letter["record"]["data"]["event_id"] == poison_id
    assert letter["source"]["group"] == names["group"]
    assert letter["source"]["stream"] == names["stream"]
    assert (letter["reason"], letter["attempts"]) == ("retries_exhausted", 3)
    assert "poison record" in letter["error"]
    labels = {"group": names["group"], "shard": letter["source"]["shard_id"]}
    assert (
        metrics.registry.get_sample_value(
            "lambdalake_consumer_dlq_records_total", {**labels, "reason": "retries_exhausted"}
        )
        == 1
    )
    assert metrics.registry.get_sample_value("lambdalake_consumer_retries_total", labels) >= 3
    state = {lease.shard_id: lease for lease in leases(redis, names["group"], engines)}
    assert int(state[letter["source"]["shard_id"]].checkpoint) >= int(letter["record"]["sequence_number"])


def test_records_older_than_max_age_go_to_the_dlq(
    engines: Settings, redis: Any, bus: StreamBus, names: dict[str, str]
) -> None:
    put_events(bus, names["stream"], make_events(50))
    time.sleep(1.2)
    worker = start_worker(engines, redis, names, max_record_age_s=1.0)
    try:
        wait_until(lambda: every_shard_checkpointed(engines, redis, names, 4), 15, "every shard checkpointed")
    finally:
        stop(worker)
    assert applied_count(redis, names["ns"]) == 0
    letters = read_dlq(bus, names["dlq"], 50)
    assert len(letters) == 50
    assert {letter["reason"] for letter in letters} == {"record_age_exceeded"}


def test_metrics_are_served_on_localhost(
    engines: Settings, redis: Any, bus: StreamBus, names: dict[str, str]
) -> None:
    put_events(bus, names["stream"], make_events(40))
    metrics = ConsumerMetrics()
    port = free_port()
    server = start_metrics_server(port, metrics.registry)
    worker = start_worker(engines, redis, names, metrics=metrics)
    try:
        wait_until(lambda: applied_count(redis, names["ns"]) == 40, 20, "40 records")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        stop(worker)
        server.shutdown()
    group = names["group"]
    assert f'lambdalake_consumer_records_total{{group="{group}",shard="shardId-000000000000"}}' in body
    assert f'lambdalake_consumer_millis_behind_latest{{group="{group}"' in body
    assert f'lambdalake_consumer_records_per_second{{group="{group}"' in body
    assert f'lambdalake_consumer_lease_events_total{{event="taken",group="{group}"}} 4.0' in body


# --- separate worker processes ----------------------------------------------------------------
def spawn_worker(
    settings: Settings, names: dict[str, str], log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "LAMBDALAKE_PROFILE": "local",
            "LAMBDALAKE_HOME": str(settings.home),
            "LAMBDALAKE_KINESIS_PORT": str(settings.kinesis_port),
            "LAMBDALAKE_REDIS_PORT": str(settings.redis_port),
            "PYTHONPATH": str(Path(__file__).parents[2]),
        }
    )
    command = [sys.executable, str(WORKER_SCRIPT), "--group", names["group"], "--stream", names["stream"]]
    command += ["--ns", names["ns"], *extra]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def owners(redis: Any, settings: Settings, group: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lease in leases(redis, group, settings):
        if lease.owner:
            counts[lease.owner] = counts.get(lease.owner, 0) + 1
    return counts


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    # SIGTERM, not SIGKILL: kinesalite crashes when a client dies in the middle of a request.
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_two_workers_split_shards_and_survive_kill_9(
    engines: Settings,
    redis: Any,
    bus: StreamBus,
    names: dict[str, str],
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    extra = ("--delay", "0.15", "--lease", str(LEASE_S), "--batch-size", "50")
    processes.append(spawn_worker(engines, names, tmp_path / "a.log", *extra))
    processes.append(spawn_worker(engines, names, tmp_path / "b.log", *extra))
    wait_until(lambda: len(leases(redis, names["group"], engines)) == 4, 20, "leases created")
    wait_until(
        lambda: sorted(owners(redis, engines, names["group"]).values()) == [2, 2],
        20,
        "a 2/2 split of 4 shards",
    )
    expected = put_events(bus, names["stream"], make_events(3000))
    wait_until(lambda: applied_count(redis, names["ns"]) > 300, 20, "processing under way")

    by_owner = owners(redis, engines, names["group"])
    pid_of = {worker_id: int(worker_id.split(":")[1]) for worker_id in by_owner}  # host:pid:nonce
    victim, survivor = processes
    victim_id = next(w for w, pid in pid_of.items() if pid == victim.pid)
    survivor_id = next(w for w, pid in pid_of.items() if pid == survivor.pid)
    assert by_owner == {victim_id: 2, survivor_id: 2}
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    assert applied_count(redis, names["ns"]) < 3000, "the kill landed while records were still pending"

    takeover = wait_until(
        lambda: owners(redis, engines, names["group"]) == {survivor_id: 4},
        LEASE_S * 3,
        "takeover of all shards",
    )
    assert takeover <= LEASE_S + LEASE_S / 3 + 1.0, f"takeover took {takeover:.2f}s"
    print(f"takeover after kill -9: {takeover:.2f}s (lease {LEASE_S}s)")
    wait_until(lambda: applied_count(redis, names["ns"]) == 3000, 60, "all 3000 records")
    ledger = Ledger.read(redis, names["ns"])
    assert ledger.delivered > 3000, "the killed worker's unfinished batch was delivered again"
    assert_exactly_once(redis, names["ns"], expected)


def test_sigterm_releases_leases_for_immediate_takeover(
    engines: Settings,
    redis: Any,
    bus: StreamBus,
    names: dict[str, str],
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    expected = put_events(bus, names["stream"], make_events(1000))
    long_lease = 30.0
    processes.append(
        spawn_worker(
            engines,
            names,
            tmp_path / "w.log",
            "--lease",
            str(long_lease),
            "--delay",
            "0.05",
            "--batch-size",
            "20",
        )
    )
    wait_until(
        lambda: sum(owners(redis, engines, names["group"]).values()) == 4, 20, "the worker to own 4 shards"
    )
    wait_until(lambda: applied_count(redis, names["ns"]) > 100, 20, "processing under way")
    processes[0].send_signal(signal.SIGTERM)
    assert processes[0].wait(15) == 0
    state = leases(redis, names["group"], engines)
    assert all(lease.owner == "" for lease in state), "every lease released"
    ends = [entry for entry in lifecycle(redis, names["ns"]) if entry.startswith("end:")]
    assert len(ends) == 4
    assert all(entry.endswith(":REQUESTED") for entry in ends)

    worker = start_worker(engines, redis, names, lease_duration_s=long_lease)
    try:
        took = wait_until(
            lambda: len(worker.owned_shards()) == 4, 5, "a new worker to take the released shards"
        )
        assert took < long_lease / 4
        wait_until(lambda: applied_count(redis, names["ns"]) == 1000, 30, "all records")
    finally:
        stop(worker)
    assert_exactly_once(redis, names["ns"], expected)
