"""The backfill benchmark's pure pieces: the sparse history it hands delivery, and its figures."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import orjson

from bench.backfill import QUIET_HOURS, SHARDS, START, _event_time, figures, history, shard_name


def _hour_counts(hours: int) -> tuple[Counter, list]:
    records = history(hours)
    counts: Counter = Counter()
    for record in records:
        try:
            moment = _event_time(orjson.loads(record.data))
        except orjson.JSONDecodeError:
            moment = None
        if moment is not None:
            counts[moment.replace(minute=0, second=0, microsecond=0)] += 1
    return counts, records


def test_history_fills_every_hour_of_the_range_but_quiet_nights_sparsely_and_nothing_after() -> None:
    counts, records = _hour_counts(12)
    busy = [START + timedelta(hours=h) for h in range(12) if h not in QUIET_HOURS]
    assert sorted(counts) == busy  # the quiet hours close empty
    assert 40 <= sum(counts.values()) / len(busy) <= 65  # about 50 events an hour
    assert len(records) == sum(counts.values())  # only events the collector accepts: each has its time


def test_history_is_a_stream_in_arrival_order_with_increasing_sequences_per_shard() -> None:
    records = history(6)
    assert {r.shard_id for r in records} == {shard_name(i) for i in range(SHARDS)}
    arrivals = [r.arrival_ts for r in records]
    assert arrivals == sorted(arrivals)
    for shard in {r.shard_id for r in records}:
        sequences = [int(r.sequence_number) for r in records if r.shard_id == shard]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert history(6) == records  # seeded: the same history every run


def test_six_months_is_the_per_hour_rate_extrapolated_to_4380_hours() -> None:
    result = figures(hours=48, events=2_400, raw_files=100, seconds=96.0)
    assert result["seconds_per_hour"] == 2.0
    assert result["six_months_minutes"] == 146.0  # 2 s × 4,380 hours / 60
    assert set(result) == {
        "hours",
        "events",
        "raw_files",
        "seconds",
        "seconds_per_hour",
        "six_months_minutes",
    }
