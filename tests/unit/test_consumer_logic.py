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
from lambdalake.consumer.delivery import (
    Abandoned,
    BatchDelivery,
    Delivered,
    DeliveryPolicy,
    Failure,
    PipelinedDelivery,
)
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
# --- pipelined delivery: batches in flight -----------------------------------------------------
class PipelinedSink:
    """A sink like the speed layer's: records apply in order above a high-water mark; a poison
    record fails when its batch applies (after the records before it did); up to ``lag`` batches
    are in flight, applied only as later ones are submitted or on finish. After a failure it has
    nothing in flight (as the speed layer drops its connection)."""

    def __init__(self, bad: set[int], lag: int = 1, fail_submit: int | None = None) -> None:
        self.bad = {str(1000 + i) for i in bad}
        self.lag = lag
        self.fail_submit = None if fail_submit is None else str(1000 + fail_submit)  # fails once
        self.fail_flush = False
        self.hwm = 0
        self.applied: list[str] = []
        self.in_flight: list[list[StreamRecord]] = []
        self.calls: list[tuple[str, list[str]]] = []

    def _apply(self, records: list[StreamRecord]) -> None:
        for r in records:
            if int(r.sequence_number) <= self.hwm:
                continue  # a replay
            if r.sequence_number in self.bad:
                raise ValueError(f"poison {r.sequence_number}")
            self.applied.append(r.sequence_number)
            self.hwm = int(r.sequence_number)

    def process(self, records: list[StreamRecord], attempt: int) -> None:
        self.calls.append(("process", [r.sequence_number for r in records]))
        self._apply(records)

    def _settle(self, keep: int) -> int:
        durable = 0
        try:
            while len(self.in_flight) > keep:
                self._apply(self.in_flight[0])
                self.in_flight.pop(0)
                durable += 1
        except Exception:
            self.in_flight = []
            raise
        return durable

    def submit(self, records: list[StreamRecord]) -> int:
        self.calls.append(("submit", [r.sequence_number for r in records]))
        if self.fail_submit in {r.sequence_number for r in records}:
            self.fail_submit, self.in_flight = None, []
            raise ConnectionResetError("lost the connection while sending")
        self.in_flight.append(records)
        return self._settle(self.lag)

    def flush(self) -> None:
        self.calls.append(("flush", []))
        if self.fail_flush:
            self.fail_flush, self.in_flight = False, []
            raise ConnectionResetError("lost the connection while sending")

    def finish(self) -> None:
        self._settle(0)


def pipeline(
    sink: PipelinedSink, dead: list[Failure], now: float = 200.0, **policy: object
) -> PipelinedDelivery:
    settings = {"max_retry_attempts": 1, "bisect_on_error": True, "backoff_s": 0.0, **policy}
    delivery = BatchDelivery(
        DeliveryPolicy(**settings),  # type: ignore[arg-type]
        sink.process,
        dead.append,
        lambda _s: True,
        lambda: now,
        rng=lambda: 1.0,
    )
    return PipelinedDelivery(delivery, sink.submit, sink.flush, sink.finish)


def batches(n: int, size: int, arrival: float = 100.0) -> list[list[StreamRecord]]:
    return [[rec(b * size + i, arrival) for i in range(size)] for b in range(n)]


def last_of(done: list[Delivered]) -> list[str]:
    return [d.records[-1].sequence_number for d in done]


def test_pipeline_reports_batches_durable_in_order_as_the_sink_says() -> None:
    sink, dead = PipelinedSink(set(), lag=2), []
    p = pipeline(sink, dead)
    reported = [last_of(p.deliver(b)) for b in batches(4, 4)]
    assert reported == [[], [], ["1003"], ["1007"]]  # two batches stay in flight
    assert sink.applied == [str(1000 + i) for i in range(8)]
    assert last_of(p.drain()) == ["1011", "1015"]
    assert not p.pending
    assert sink.applied == [str(1000 + i) for i in range(16)]
    assert [kind for kind, _ in sink.calls] == ["submit"] * 4  # no batch took the usual path


def test_pipeline_failure_delivers_every_batch_not_durable_again_in_order() -> None:
    sink, dead = PipelinedSink({5}), []
    p = pipeline(sink, dead)
    first, second, third = batches(3, 4)
    assert p.deliver(first) == []
    assert last_of(p.deliver(second)) == ["1003"]
    done = p.deliver(third)  # the second fails as the third goes in: both take the usual path
    assert last_of(done) == ["1007", "1011"]
    assert [r.sequence_number for f in dead for r in f.records] == ["1005"]  # bisected to the poison
    assert (done[0].outcome.processed, done[0].outcome.dead_lettered) == (3, 1)
    assert done[1].outcome.processed == 4
    assert sink.applied == [str(1000 + i) for i in range(12) if i != 5]  # each once, in order
    assert not p.pending
    assert p.drain() == []


def test_pipeline_failure_found_on_drain_is_delivered_again() -> None:
    sink, dead = PipelinedSink({2}), []
    p = pipeline(sink, dead)
    assert p.deliver(batches(1, 4)[0]) == []
    done = p.drain()
    assert last_of(done) == ["1003"]
    assert [r.sequence_number for f in dead for r in f.records] == ["1002"]
    assert sink.applied == ["1000", "1001", "1003"]


def test_pipeline_submit_failure_delivers_the_earlier_batch_and_this_one() -> None:
    sink, dead = PipelinedSink(set(), fail_submit=6), []
    p = pipeline(sink, dead)
    first, second = batches(2, 4)
    assert p.deliver(first) == []
    done = p.deliver(second)  # fails before the first applied: both go the usual way, in order
    assert last_of(done) == ["1003", "1007"]
    assert sink.applied == [str(1000 + i) for i in range(8)]
    assert dead == []
    assert sink.calls[-2:] == [
        ("process", ["1000", "1001", "1002", "1003"]),
        ("process", ["1004", "1005", "1006", "1007"]),
    ]


def test_pipeline_flush_keeps_batches_in_flight_and_a_failed_flush_delivers_them_again() -> None:
    sink, dead = PipelinedSink(set(), lag=2), []
    p = pipeline(sink, dead)
    first, second = batches(2, 4)
    p.deliver(first)
    assert p.flush() == []
    assert len(p.pending) == 1  # sent on, still not durable
    p.deliver(second)
    sink.fail_flush = True
    done = p.flush()
    assert last_of(done) == ["1003", "1007"]
    assert sink.applied == [str(1000 + i) for i in range(8)]
    assert not p.pending


def test_pipeline_aged_batch_waits_for_the_batches_in_flight() -> None:
    sink, dead = PipelinedSink(set()), []
    p = pipeline(sink, dead, now=200.0, max_record_age_s=60)
    assert p.deliver([rec(0, arrival=190.0), rec(1, arrival=190.0)]) == []
    done = p.deliver([rec(2, arrival=100.0), rec(3, arrival=100.0)])  # both too old: dead letters
    assert last_of(done) == ["1001", "1003"]  # checkpoints stay in shard order
    assert [d.outcome.dead_lettered for d in done] == [0, 2]
    assert sink.applied == ["1000", "1001"]


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
