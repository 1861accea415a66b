"""Resharding: a child shard starts only once its parents are finished, so per-key order holds across
parent -> child and every record is processed once. Split and merge on kinesalite (which has
SplitShard/MergeShards but not UpdateShardCount); UpdateShardCount on moto server."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from lambdalake.consumer import ConsumerConfig, ConsumerWorker
from lambdalake.settings import Settings
from lambdalake.stream import TRIM_HORIZON, StreamBus
from lambdalake.stream.kinesis import KinesisBus, ensure_stream, kinesis_client
from tests.conftest import free_port
from tests.integration.consumer_worker import (
    Ledger,
    LedgerProcessor,
    lifecycle,
    make_events,
    order_of,
    put_events,
)
from tests.integration.test_consumer_runtime import applied_count, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis(engines: Settings) -> Iterator[Any]:
    client = redis_lib.Redis.from_url(engines.redis_url)
    yield client
    client.close()


def start_worker(
    settings: Settings, redis: Any, bus: StreamBus, stream: str, group: str, ns: str
) -> ConsumerWorker:
    config = ConsumerConfig.from_settings(
        settings,
        group,
        stream=stream,
        lease_duration_s=2.0,
        idle_poll_s=0.05,
        shard_sync_s=0.5,
        batch_size=25,
        max_batching_window_s=0.05,
    )
    return ConsumerWorker(
        settings, config, lambda: LedgerProcessor(redis, ns, delay=0.02), bus=bus, redis=redis
    ).start()


def extend(expected: dict[str, list[str]], more: dict[str, list[str]]) -> None:
    for key, ids in more.items():
        expected.setdefault(key, []).extend(ids)


def assert_children_after_parents(redis: Any, ns: str, bus: StreamBus, stream: str) -> None:
    log = lifecycle(redis, ns)
    ended = {entry.split(":")[1]: i for i, entry in enumerate(log) if entry.endswith(":TERMINATE")}
    first_init = {}
    for i, entry in enumerate(log):
        if entry.startswith("init:"):
            first_init.setdefault(entry.split(":")[1], i)
    children = 0
    for shard in bus.list_shards(stream):
        for parent in (shard.parent_shard_id, shard.adjacent_parent_shard_id):
            if parent and shard.shard_id in first_init:
                children += 1
                assert parent in ended, f"{parent} never finished but its child {shard.shard_id} started"
                assert ended[parent] < first_init[shard.shard_id], (
                    f"{shard.shard_id} started before {parent} ended"
                )
    assert children > 0


def children_started(redis: Any, ns: str, bus: StreamBus, stream: str) -> bool:
    started = {entry.split(":")[1] for entry in lifecycle(redis, ns) if entry.startswith("init:")}
    return any(shard.parent_shard_id and shard.shard_id in started for shard in bus.list_shards(stream))


def wait_active(settings: Settings, stream: str) -> None:
    client = kinesis_client(settings)
    wait_until(
        lambda: (
            client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
            == "ACTIVE"
        ),
        10,
        "stream ACTIVE",
    )


def test_split_and_merge_on_kinesalite_keep_order_and_process_once(engines: Settings, redis: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    stream, group, ns = f"reshard-{tag}", f"r{tag}", f"test:{tag}"
    ensure_stream(engines, stream, 2)
    bus = KinesisBus(engines)
    client = kinesis_client(engines)
    expected = put_events(bus, stream, make_events(400, users=30))
    worker = start_worker(engines, redis, bus, stream, group, ns)
    try:
        wait_until(lambda: applied_count(redis, ns) > 20, 20, "processing under way")
        shard0 = next(s for s in bus.list_shards(stream) if s.shard_id.endswith("0"))
        middle = (shard0.hash_key_range[0] + shard0.hash_key_range[1]) // 2
        client.split_shard(StreamName=stream, ShardToSplit=shard0.shard_id, NewStartingHashKey=str(middle))
        wait_active(engines, stream)
        extend(expected, put_events(bus, stream, make_events(300, users=30)))
        open_shards = sorted(
            (s for s in bus.list_shards(stream) if s.is_open), key=lambda s: s.hash_key_range[0]
        )
        assert len(open_shards) == 3
        client.merge_shards(
            StreamName=stream,
            ShardToMerge=open_shards[1].shard_id,
            AdjacentShardToMerge=open_shards[2].shard_id,
        )
        wait_active(engines, stream)
        extend(expected, put_events(bus, stream, make_events(300, users=30)))
        wait_until(lambda: applied_count(redis, ns) == 1000, 60, "all 1000 records")
    finally:
        worker.stop()
        worker.join(15)
    ledger = Ledger.read(redis, ns)
    assert set(ledger.applied) == {i for ids in expected.values() for i in ids}
    assert set(ledger.hits.values()) == {1}, "every record applied exactly once"
    for key, ids in expected.items():
        assert order_of(redis, ns, key) == ids, f"per-key order across parent -> child for {key}"
    assert len(bus.list_shards(stream)) == 5  # 0, 1 closed; 2 open; 3 closed; 4 = merge(3, 1)
    assert_children_after_parents(redis, ns, bus, stream)


@pytest.fixture
def moto_settings(engines: Settings, tmp_path: Path) -> Iterator[Settings]:
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(__import__("sys").executable).with_name("moto_server")),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = engines.model_copy(update={"kinesis_endpoint_url": f"http://127.0.0.1:{port}"})
    try:
        client = kinesis_client(settings, timeout=1.0, retries=0)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.list_streams()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield settings
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_update_shard_count_on_moto(moto_settings: Settings, redis: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    stream, group, ns = f"reshard-{tag}", f"m{tag}", f"test:{tag}"
    ensure_stream(moto_settings, stream, 2)
    bus = KinesisBus(moto_settings)
    expected = put_events(bus, stream, make_events(200, users=20))
    worker = start_worker(moto_settings, redis, bus, stream, group, ns)
    try:
        wait_until(lambda: applied_count(redis, ns) == 200, 30, "records before the reshard")
        kinesis_client(moto_settings).update_shard_count(
            StreamName=stream, TargetShardCount=4, ScalingType="UNIFORM_SCALING"
        )
        # No puts after the reshard here: moto keeps routing them to the closed parents (see below),
        # so whether they are read depends on a race with the parent's end that real Kinesis does not
        # have. Records put across a reshard are covered on kinesalite's SplitShard/MergeShards above.
        wait_until(lambda: len(bus.list_shards(stream)) == 6, 30, "the reshard")
        wait_until(lambda: children_started(redis, ns, bus, stream), 60, "children to start after parents")
        time.sleep(1.0)  # let any late duplicate show up before counting
    finally:
        worker.stop()
        worker.join(15)
    ledger = Ledger.read(redis, ns)
    assert set(ledger.applied) == {i for ids in expected.values() for i in ids}
    assert set(ledger.applied.values()) == {1}
    for key, ids in expected.items():
        assert order_of(redis, ns, key) == ids, f"per-key order across parent -> child for {key}"
    assert len(bus.list_shards(stream)) == 6
    assert_children_after_parents(redis, ns, bus, stream)
    assert set(ledger.hits.values()) == {1}
    # moto 5.x quirks (real Kinesis does neither): SplitShard re-puts the parent's records into the
    # parent itself (renumbered from 1), and PutRecords keeps routing to the closed parents because
    # its hash lookup ignores whether a shard is open. So on moto the children stay empty and this
    # test only proves the runtime copes (closed shards end, children wait, nothing lost or doubled);
    # the kinesalite test above is the one that proves parent -> child order.
    for shard in bus.list_shards(stream):
        if shard.parent_shard_id:
            iterator = bus.shard_iterator(stream, shard.shard_id, TRIM_HORIZON)
            assert bus.read(shard.shard_id, iterator).records == [], (
                "moto now fills children: strengthen this test"
            )
