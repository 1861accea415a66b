"""Pure parts of the consumer runtime: lease balancing, bisect/retry/DLQ policy, config, DLQ format."""

from __future__ import annotations

import base64
import random
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from lambdalake.consumer.checkpoints import SHARD_END, initial_checkpoint, start_position
from lambdalake.consumer.config import ConsumerConfig
from lambdalake.consumer.delivery import Abandoned, BatchDelivery, DeliveryPolicy, Failure
from lambdalake.consumer.dlq import dead_letter_records
from lambdalake.consumer.leases import Lease, plan_takes
from lambdalake.consumer.processor import RetryLater
from lambdalake.settings import Settings
from lambdalake.stream.bus import LATEST, TRIM_HORIZON, Position, ShardInfo, StreamRecord

NOW = 1_000_000


def lease(shard: str, owner: str = "", expires: int = NOW + 5000, checkpoint: str = "1", parents=()) -> Lease:
    return Lease(shard, owner, 1, expires if owner else 0, checkpoint, tuple(parents))


def owners(takes) -> list[str]:
    return sorted(t.lease.shard_id for t in takes)


# --- lease balancing ------------------------------------------------------------------------------
def test_first_worker_takes_every_free_lease() -> None:
    leases = [lease(f"s{i}") for i in range(4)]
    takes = plan_takes(leases, "a", NOW, random.Random(1))
    assert owners(takes) == ["s0", "s1", "s2", "s3"]
    assert {t.mode for t in takes} == {"expired"}


def test_new_worker_steals_half_from_a_worker_holding_all() -> None:
    leases = [lease(f"s{i}", owner="a") for i in range(4)]
    takes = plan_takes(leases, "b", NOW, random.Random(1))
    assert len(takes) == 2
    assert {t.mode for t in takes} == {"steal"}
    assert {t.lease.owner for t in takes} == {"a"}


def test_balanced_split_is_stable() -> None:
    leases = [lease("s0", "a"), lease("s1", "a"), lease("s2", "b"), lease("s3", "b")]
    assert plan_takes(leases, "a", NOW) == []
    assert plan_takes(leases, "b", NOW) == []


def test_expired_leases_are_taken_before_stealing() -> None:
    leases = [
        lease("s0", "a"),
        lease("s1", "a"),
        lease("s2", "dead", expires=NOW - 1),
        lease("s3", "dead", expires=NOW),
    ]
    takes = plan_takes(leases, "b", NOW, random.Random(2))
    assert owners(takes) == ["s2", "s3"]
    assert {t.mode for t in takes} == {"expired"}


def test_three_workers_converge_without_thrashing() -> None:
    """Simulate rounds of three workers applying their plans: the split ends 2/1/1 and stays there."""
    state = {f"s{i}": "" for i in range(4)}
    rng = random.Random(3)
    history = []
    for _round in range(6):
        for worker in ("a", "b", "c"):
            leases = [lease(s, o) for s, o in state.items()]
            for take in plan_takes(leases, worker, NOW, rng):
                state[take.lease.shard_id] = worker
        history.append(sorted(Counter(state.values()).values()))
    assert history[-1] == [1, 1, 2]
    assert history[-1] == history[-2] == history[-3]


def test_children_wait_for_their_parents() -> None:
    leases = [
        lease("parent", checkpoint="5"),
        lease("child1", checkpoint="TRIM_HORIZON", parents=["parent"]),
        lease("child2", checkpoint="TRIM_HORIZON", parents=["parent"]),
    ]
    assert owners(plan_takes(leases, "a", NOW)) == ["parent"]
    finished = [lease("parent", checkpoint=SHARD_END), *leases[1:]]
    assert owners(plan_takes(finished, "a", NOW)) == ["child1", "child2"]


def test_merged_child_waits_for_both_parents() -> None:
    leases = [
        lease("p1", checkpoint=SHARD_END),
        lease("p2", owner="x", checkpoint="9"),
        lease("child", checkpoint="TRIM_HORIZON", parents=["p1", "p2"]),
    ]
    assert owners(plan_takes(leases, "a", NOW)) == []  # p2 is owned and live; the child must wait


def test_parent_without_lease_counts_as_finished() -> None:
    """A parent trimmed from the stream (lease deleted) must not block its child forever."""
    leases = [lease("child", checkpoint="TRIM_HORIZON", parents=["gone"])]
    assert owners(plan_takes(leases, "a", NOW)) == ["child"]


# --- delivery policy: retries, bisect, DLQ ------------------------------------------------------
def rec(i: int, arrival: float = 100.0, data: bytes | None = None) -> StreamRecord:
    return StreamRecord(
        "shardId-0", str(1000 + i), f"k{i}", data if data is not None else b'{"n": %d}' % i, arrival
    )


class Harness:
    """Runs BatchDelivery with a processor that fails on chosen records."""

    def __init__(
        self, bad: set[int], policy: DeliveryPolicy, transient_failures: int = 0, now: float = 200.0
    ):
        self.bad = {str(1000 + i) for i in bad}
        self.calls: list[list[str]] = []
        self.applied: list[str] = []
        self.dead: list[Failure] = []
        self.waits: list[float] = []
        self.transient_failures = transient_failures
        self.delivery = BatchDelivery(
            policy, self.process, self.dead.append, self.wait, lambda: now, rng=lambda: 1.0
        )

    def process(self, records: list[StreamRecord], attempt: int) -> None:
        self.calls.append([r.sequence_number for r in records])
        if self.transient_failures:
            self.transient_failures -= 1
            raise RetryLater("sink down")
        if any(r.sequence_number in self.bad for r in records):
            raise ValueError("poison")
        self.applied.extend(r.sequence_number for r in records)

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return True


def test_bisect_isolates_the_single_poison_record() -> None:
    h = Harness({37}, DeliveryPolicy(max_retry_attempts=2, bisect_on_error=True, backoff_s=0.01))
    outcome = h.delivery.deliver([rec(i) for i in range(100)])
    assert [f.records[0].sequence_number for f in h.dead] == ["1037"]
    assert len(h.dead[0].records) == 1
    assert h.dead[0].reason == "retries_exhausted"
    assert h.dead[0].attempts == 3
    assert "poison" in h.dead[0].error
    assert h.applied == [str(1000 + i) for i in range(100) if i != 37]  # order kept, nothing lost
    assert (outcome.processed, outcome.dead_lettered) == (99, 1)
    # 7 halvings down to one record, then 3 attempts on it: far fewer than retrying 100 singles
    assert len(h.calls) < 30


def test_without_bisect_the_whole_batch_goes_to_the_dlq_after_retries() -> None:
    h = Harness({3}, DeliveryPolicy(max_retry_attempts=1, bisect_on_error=False, backoff_s=0.01))
    outcome = h.delivery.deliver([rec(i) for i in range(5)])
    assert len(h.calls) == 2  # first attempt + 1 retry
    assert [len(f.records) for f in h.dead] == [5]
    assert h.applied == []
    assert outcome.dead_lettered == 5


def test_transient_errors_retry_without_counting_or_dead_lettering() -> None:
    h = Harness(
        set(),
        DeliveryPolicy(max_retry_attempts=0, bisect_on_error=True, backoff_s=0.01),
        transient_failures=5,
    )
    outcome = h.delivery.deliver([rec(i) for i in range(4)])
    assert h.dead == []
    assert h.applied == [str(1000 + i) for i in range(4)]
    assert len(h.calls) == 6
    assert all(len(c) == 4 for c in h.calls)
    assert outcome.retries == 5


def test_records_older_than_max_age_go_to_the_dlq_unprocessed() -> None:
    h = Harness(set(), DeliveryPolicy(max_record_age_s=60), now=200.0)
    records = [rec(0, arrival=100.0), rec(1, arrival=139.0), rec(2, arrival=150.0)]
    outcome = h.delivery.deliver(records)
    assert [r.sequence_number for f in h.dead for r in f.records] == ["1000", "1001"]
    assert h.dead[0].reason == "record_age_exceeded"
    assert h.applied == ["1002"]
    assert (outcome.processed, outcome.dead_lettered) == (1, 2)


def test_stop_during_backoff_abandons_the_batch() -> None:
    h = Harness({0}, DeliveryPolicy(max_retry_attempts=5, bisect_on_error=False))
    h.wait = lambda _s: False  # type: ignore[method-assign]
    h.delivery.wait = h.wait
    with pytest.raises(Abandoned):
        h.delivery.deliver([rec(0)])
    assert h.dead == []


def test_failing_dlq_write_is_retried_not_dropped() -> None:
    written: list[Failure] = []
    failures = iter([True, True, False])

    def dead_letter(f: Failure) -> None:
        if next(failures):
            raise ConnectionError("dlq stream down")
        written.append(f)

    def process(records: list[StreamRecord], attempt: int) -> None:
        raise ValueError("bad")

    delivery = BatchDelivery(
        DeliveryPolicy(max_retry_attempts=0),
        process,
        dead_letter,
        lambda _s: True,
        lambda: 0.0,
        rng=lambda: 0.0,
    )
    assert delivery.deliver([rec(0)]).dead_lettered == 1
    assert len(written) == 1


# --- DLQ record format ----------------------------------------------------------------------------
def test_dlq_records_carry_source_range_error_and_payload() -> None:
    records = [rec(0), rec(1, data=b"\xff\x00not json")]
    failure = Failure(records, "retries_exhausted", "ValueError: bad", "ValueError", 4)
    out = dead_letter_records(failure, "views", "events", "shardId-0", datetime(2026, 1, 1, tzinfo=UTC))
    assert [r.partition_key for r in out] == ["k0", "k1"]
    first, second = (orjson.loads(r.data) for r in out)
    assert first["source"] == {"group": "views", "stream": "events", "shard_id": "shardId-0"}
    assert first["sequence_range"] == {"first": "1000", "last": "1001", "count": 2}
    assert (first["error"], first["attempts"], first["reason"]) == ("ValueError: bad", 4, "retries_exhausted")
    assert first["record"]["data"] == {"n": 0}
    assert base64.b64decode(second["record"]["data_base64"]) == b"\xff\x00not json"


# --- config and checkpoints -----------------------------------------------------------------------
def test_config_from_settings_with_per_group_overrides() -> None:
    settings = Settings(
        _env_file=None,
        consumer_batch_size=100,
        consumer_groups={"views": {"batch_size": 7, "starting_position": "LATEST"}},
    )  # type: ignore[call-arg]
    views = ConsumerConfig.from_settings(settings, "views")
    alerts = ConsumerConfig.from_settings(settings, "alerts", max_retry_attempts=0)
    assert (views.batch_size, views.starting_position, views.initial_position) == (7, "LATEST", LATEST)
    assert (alerts.batch_size, alerts.max_retry_attempts) == (100, 0)
    assert views.on_failure_stream == settings.dlq_stream_name
    assert views.stream == settings.stream_name


def test_config_rejects_unknown_and_invalid_values() -> None:
    settings = Settings(_env_file=None, consumer_groups={"views": {"batchsize": 7}})  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown settings"):
        ConsumerConfig.from_settings(settings, "views")
    with pytest.raises(ValueError, match="AT_TIMESTAMP needs"):
        ConsumerConfig.from_settings(Settings(_env_file=None), "g", starting_position="AT_TIMESTAMP")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="batch_size"):
        ConsumerConfig.from_settings(Settings(_env_file=None), "g", batch_size=0)  # type: ignore[call-arg]


def test_config_parses_timestamps_from_group_overrides() -> None:
    settings = Settings(
        _env_file=None,
        consumer_groups={
            "g": {"starting_position": "AT_TIMESTAMP", "starting_timestamp": "2026-01-01T00:00:00+00:00"}
        },
    )  # type: ignore[call-arg]
    position = ConsumerConfig.from_settings(settings, "g").initial_position
    assert position == Position("AT_TIMESTAMP", timestamp=datetime(2026, 1, 1, tzinfo=UTC))


def shard(shard_id: str, parent: str | None = None) -> ShardInfo:
    return ShardInfo(shard_id, parent, None, "0", None, (0, 1))


def test_children_start_at_trim_horizon_even_for_a_latest_group() -> None:
    config = ConsumerConfig(group="g", stream="s", on_failure_stream="d", starting_position="LATEST")
    known = {"p", "c"}
    assert initial_checkpoint(shard("p"), known, config) == "LATEST"
    assert initial_checkpoint(shard("c", parent="p"), known, config) == "TRIM_HORIZON"
    assert initial_checkpoint(shard("c", parent="trimmed"), known, config) == "LATEST"


def test_start_position_from_checkpoint() -> None:
    config = ConsumerConfig(group="g", stream="s", on_failure_stream="d")
    assert start_position("12345", config) == Position.after("12345")
    assert start_position("TRIM_HORIZON", config) == TRIM_HORIZON
    assert start_position("LATEST", config) == LATEST
    assert start_position("AT_TIMESTAMP", config) == TRIM_HORIZON  # no timestamp configured: lose nothing
    assert start_position(SHARD_END, config) is None


# --- batching of prefetched reads -----------------------------------------------------------------
def test_batches_split_prefetched_reads_and_report_the_shard_end_once_drained() -> None:
    from lambdalake.consumer.metrics import ConsumerMetrics
    from lambdalake.consumer.worker import _END, ShardConsumer, _Shared
    from lambdalake.stream.bus import ReadBatch

    config = ConsumerConfig(
        group="g", stream="s", on_failure_stream="d", batch_size=3, max_batching_window_s=0.01
    )
    shared = _Shared(config, "w", None, None, ConsumerMetrics(), {}, lambda: None)  # type: ignore[arg-type]
    consumer = ShardConsumer(shared, lease("shardId-0"), processor=None)  # type: ignore[arg-type]
    consumer._queue.put(ReadBatch([rec(0), rec(1)], "it", 0))
    consumer._queue.put(ReadBatch([rec(2), rec(3), rec(4)], "it", 0))
    first, ended_first = consumer._next_batch()
    consumer._queue.put(_END)
    second, ended_second = consumer._next_batch()
    assert [r.sequence_number for r in first] == ["1000", "1001", "1002"]
    assert not ended_first
    assert [r.sequence_number for r in second] == ["1003", "1004"]
    assert ended_second
