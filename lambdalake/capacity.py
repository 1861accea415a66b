"""Sizing for the aws profile: Kinesis shards, consumer workers, delivery buffers, monthly cost.

Pure arithmetic over stated limits, measured throughputs and dated list prices, so every figure
`lambdalake capacity` prints can be checked by hand. Sizes use binary units, as Kinesis does
(1 MiB/s per shard written); "GB" in prices is the GiB AWS bills.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# --- Kinesis Data Streams limits, per shard
#   (docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html)
SHARD_WRITE_MIB_S = 1.0
SHARD_WRITE_RECORDS_S = 1000
SHARD_READ_MIB_S = 2.0  # shared by every consumer using GetRecords (no enhanced fan-out)
SHARD_GET_RECORDS_CALLS_S = 5  # GetRecords calls per shard per second, shared the same way
PUT_PAYLOAD_UNIT_KIB = 25  # provisioned mode bills PUTs in 25 KiB units

# The consumer groups that read the event stream, each all of it (speed layer: views, alerts,
# enrich; lake delivery). The DLQ stream is read by delivery's errors archive only.
CONSUMER_GROUPS: tuple[str, ...] = ("views", "alerts", "enrich", "delivery")

# --- Throughput of one worker process, measured (docs/benchmarks.md) on a 2-core machine shared
# with kinesalite and Redis, so conservative: a speed process as deployed (views, alerts and enrich,
# each reading the whole stream) 4,835-8,464 events/s (`bench speed`, events_per_s_all_groups,
# 2026-12-03; its own CPU 85-158 µs per event), planned at 4,500; `bench delivery` 10,635 events/s.
SPEED_WORKER_EVENTS_S = 4500
DELIVERY_WORKER_EVENTS_S = 10000

# Redis memory of the speed layer's dedupe sets: an event_id costs ≈80 bytes in a Redis set
# (measured, Redis 6.2) and stays speed_dedupe_ttl_s after its event-time hour. `views` and `alerts`
# remember every event; `enrich` only purchases and identifies (≈4% of the generator's events).
SEEN_BYTES_PER_ID = 80
SEEN_BUCKET_S = 3600
DEDUPE_GROUPS_ALL_EVENTS = 2
ENRICH_SHARE = 0.05

# Raw-zone Parquet (zstd) bytes per byte of event JSON: `bench delivery` wrote 61-63 bytes per
# generated event, whose JSON averages 525 bytes (`lambdalake generate`): 0.12.
RAW_COMPRESSION_RATIO = 0.12

# Delivery buffers, bounded like Firehose's (and the delivery_buffer_* settings).
BUFFER_MIB_MAX = 128.0
BUFFER_MIB_MIN = 1.0
BUFFER_INTERVAL_S_MAX = 300.0
BUFFER_RECORDS_MAX = 10000
# Input MiB per raw file: large enough for Spark and Athena, small enough to flush often.
TARGET_FILE_MIB = 64.0

# --- List prices, us-east-1, USD. Sources and the date they were read:
#   Kinesis Data Streams: aws.amazon.com/kinesis/data-streams/pricing/
#   (read 2025-06; re-check before budgeting)
KINESIS_SHARD_HOUR = 0.015
KINESIS_PUT_UNITS_PER_MILLION = 0.014
KINESIS_EXTENDED_RETENTION_SHARD_HOUR = 0.020  # retention beyond 24 h, up to 7 days
KINESIS_ON_DEMAND_STREAM_HOUR = 0.04
KINESIS_ON_DEMAND_GB_IN = 0.08  # each record rounded up to the next KiB
KINESIS_ON_DEMAND_GB_OUT = 0.04  # per GB retrieved, so once per consumer group
KINESIS_ON_DEMAND_RETENTION_GB_MONTH = 0.10  # data kept beyond 24 h
#   S3 Standard: aws.amazon.com/s3/pricing/ (read 2025-06)
S3_GB_MONTH = 0.023
S3_PUT_PER_THOUSAND = 0.005
#   Fargate, Linux/x86: aws.amazon.com/fargate/pricing/ (read 2025-06)
FARGATE_VCPU_HOUR = 0.04048
FARGATE_GB_HOUR = 0.004445
HOURS_PER_MONTH = 730  # AWS's billing month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
WORKER_VCPU = 1.0  # the task sizes of infra/services.yaml (speed and delivery)
WORKER_GB = 2.0


@dataclass(frozen=True)
class CapacityInput:
    events_per_s: float
    avg_event_kb: float
    headroom: float = 0.25
    retention_hours: int = 24
    consumer_idle_poll_s: float = 0.2
    speed_worker_events_s: float = SPEED_WORKER_EVENTS_S
    delivery_worker_events_s: float = DELIVERY_WORKER_EVENTS_S
    dedupe_ttl_s: int = 86400  # LAMBDALAKE_SPEED_DEDUPE_TTL_S

    def __post_init__(self) -> None:
        if self.events_per_s <= 0 or self.avg_event_kb <= 0:
            raise ValueError("events per second and average event size must be positive")
        if self.avg_event_kb > 1024:
            raise ValueError("a Kinesis record holds at most 1 MiB (1024 KiB)")
        if self.headroom < 0 or self.retention_hours < 24 or self.consumer_idle_poll_s <= 0:
            raise ValueError("headroom ≥ 0, retention ≥ 24 h and idle poll > 0 are required")


@dataclass
class CapacityPlan:
    inputs: dict[str, Any]
    peak_events_per_s: float
    write_mib_s: float
    read_mib_s: float
    shards_for_write_bytes: int
    shards_for_write_records: int
    shards_for_reads: int
    shards: int
    binding_limit: str
    consumer_groups: list[str]
    speed_workers: int
    delivery_workers: int
    get_records_calls_per_shard_s: float
    min_idle_poll_s: float
    delivery_buffer_mib: float
    delivery_buffer_interval_s: float
    delivery_buffer_records: int
    raw_gb_per_month: float
    redis_dedupe_gib: float
    monthly_cost_usd: dict[str, dict[str, float]]
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _money(value: float) -> float:
    return round(value, 2)


def plan(spec: CapacityInput) -> CapacityPlan:
    """Size the stream, workers and buffers for ``spec`` and estimate a month's cost."""
    peak = spec.events_per_s * (1 + spec.headroom)
    record_kib = spec.avg_event_kb
    write_mib_s = peak * record_kib / 1024
    groups = len(CONSUMER_GROUPS)
    read_mib_s = write_mib_s * groups
    by_bytes = math.ceil(write_mib_s / SHARD_WRITE_MIB_S)
    by_records = math.ceil(peak / SHARD_WRITE_RECORDS_S)
    by_reads = math.ceil(read_mib_s / SHARD_READ_MIB_S)
    shards = max(1, by_bytes, by_records, by_reads)
    binding = max(
        [("write bytes", by_bytes), ("write records", by_records), ("reads", by_reads)], key=lambda x: x[1]
    )[0]

    # A worker holds leases on some shards; more workers than shards would sit idle.
    speed_workers = min(shards, math.ceil(peak / spec.speed_worker_events_s))
    delivery_workers = min(shards, math.ceil(peak / spec.delivery_worker_events_s))

    # Caught-up consumers poll each shard every idle_poll_s, each group on its own.
    calls = groups / spec.consumer_idle_poll_s
    min_idle_poll = groups / SHARD_GET_RECORDS_CALLS_S

    # Delivery cuts one file per shard per flush: aim at TARGET_FILE_MIB of input per file, within
    # Firehose's bounds, never waiting longer than its longest interval; a flush also holds at most
    # BUFFER_RECORDS_MAX records, which comes first for small events.
    per_shard_mib_s = spec.events_per_s * record_kib / 1024 / shards
    per_shard_events_s = spec.events_per_s / shards
    interval = min(
        BUFFER_INTERVAL_S_MAX, TARGET_FILE_MIB / per_shard_mib_s, BUFFER_RECORDS_MAX / per_shard_events_s
    )
    buffer_mib = min(BUFFER_MIB_MAX, max(BUFFER_MIB_MIN, math.ceil(per_shard_mib_s * interval)))
    buffer_records = min(BUFFER_RECORDS_MAX, max(1, math.ceil(per_shard_events_s * interval)))

    # --- a month at the average rate (not the peak) ---
    events_month = spec.events_per_s * SECONDS_PER_MONTH
    gb_in = events_month * record_kib / 1024**2
    gb_in_rounded = events_month * math.ceil(record_kib) / 1024**2
    put_units = events_month * math.ceil(record_kib / PUT_PAYLOAD_UNIT_KIB)
    extended = spec.retention_hours > 24
    provisioned = {
        "shard_hours": shards * HOURS_PER_MONTH * KINESIS_SHARD_HOUR,
        "put_payload_units": put_units / 1e6 * KINESIS_PUT_UNITS_PER_MILLION,
        "extended_retention": (shards * HOURS_PER_MONTH * KINESIS_EXTENDED_RETENTION_SHARD_HOUR)
        if extended
        else 0.0,
    }
    retained_gb = gb_in / (SECONDS_PER_MONTH / 3600) * (spec.retention_hours - 24) if extended else 0.0
    on_demand = {
        "stream_hours": HOURS_PER_MONTH * KINESIS_ON_DEMAND_STREAM_HOUR,
        "data_in": gb_in_rounded * KINESIS_ON_DEMAND_GB_IN,
        "data_out": gb_in * groups * KINESIS_ON_DEMAND_GB_OUT,
        "extended_retention": retained_gb * KINESIS_ON_DEMAND_RETENTION_GB_MONTH,
    }
    raw_gb = gb_in * RAW_COMPRESSION_RATIO
    remembered = peak * (spec.dedupe_ttl_s + SEEN_BUCKET_S) * (DEDUPE_GROUPS_ALL_EVENTS + ENRICH_SHARE)
    dedupe_gib = remembered * SEEN_BYTES_PER_ID / 1024**3
    files_month = shards * SECONDS_PER_MONTH / interval
    shared = {
        "raw_zone_storage_first_month": raw_gb * S3_GB_MONTH,
        "raw_zone_puts": files_month / 1000 * S3_PUT_PER_THOUSAND,
        "consumer_workers_fargate": (speed_workers + delivery_workers)
        * HOURS_PER_MONTH
        * (WORKER_VCPU * FARGATE_VCPU_HOUR + WORKER_GB * FARGATE_GB_HOUR),
    }
    cost = {
        "provisioned": {k: _money(v) for k, v in provisioned.items()},
        "on_demand": {k: _money(v) for k, v in on_demand.items()},
        "shared": {k: _money(v) for k, v in shared.items()},
    }
    cost["provisioned"]["total"] = _money(sum(provisioned.values()) + sum(shared.values()))
    cost["on_demand"]["total"] = _money(sum(on_demand.values()) + sum(shared.values()))

    warnings = []
    if calls > SHARD_GET_RECORDS_CALLS_S:
        warnings.append(
            f"{groups} consumer groups polling every {spec.consumer_idle_poll_s:g} s make {calls:g} "
            f"GetRecords calls per shard per second (limit {SHARD_GET_RECORDS_CALLS_S}): set "
            f"LAMBDALAKE_CONSUMER_IDLE_POLL_S to at least {min_idle_poll:g}, or use enhanced fan-out"
        )
    if spec.events_per_s * record_kib / 1024 / shards * BUFFER_INTERVAL_S_MAX < BUFFER_MIB_MIN:
        warnings.append("low traffic: raw files stay small; compaction (maintenance DAG) merges them")

    assumptions = [
        f"events/s is the average; shards and workers are sized for it plus {spec.headroom:.0%} headroom "
        f"({peak:g} events/s)",
        "one event per Kinesis record; record size = the average event size (partition key negligible)",
        f"{groups} consumer groups read the whole event stream with shared-throughput GetRecords: "
        + ", ".join(CONSUMER_GROUPS),
        f"one worker process handles {spec.speed_worker_events_s:g} events/s in the speed layer and "
        f"{spec.delivery_worker_events_s:g} in delivery (docs/benchmarks.md, conservative)",
        f"raw zone Parquet is {RAW_COMPRESSION_RATIO:g} of the event JSON (bench delivery, zstd)",
        f"Redis dedupe sets: {SEEN_BYTES_PER_ID} bytes per event_id, kept {spec.dedupe_ttl_s} s after "
        f"its hour, by views and alerts for every event and by enrich for {ENRICH_SHARE:.0%} of them; "
        "the views themselves come on top",
        f"prices: us-east-1 list prices read 2025-06, {HOURS_PER_MONTH} h per month; "
        "excluded: Redis, Redshift, MWAA, ALB, NAT, collector and serving tasks, data transfer",
        f"stream retention {spec.retention_hours} h"
        + (" (extended retention billed)" if extended else " (no extended retention)"),
    ]
    return CapacityPlan(
        inputs=asdict(spec),
        peak_events_per_s=peak,
        write_mib_s=round(write_mib_s, 4),
        read_mib_s=round(read_mib_s, 4),
        shards_for_write_bytes=by_bytes,
        shards_for_write_records=by_records,
        shards_for_reads=by_reads,
        shards=shards,
        binding_limit=binding,
        consumer_groups=list(CONSUMER_GROUPS),
        speed_workers=speed_workers,
        delivery_workers=delivery_workers,
        get_records_calls_per_shard_s=calls,
        min_idle_poll_s=min_idle_poll,
        delivery_buffer_mib=float(buffer_mib),
        delivery_buffer_interval_s=round(interval, 1),
        delivery_buffer_records=buffer_records,
        raw_gb_per_month=round(raw_gb, 2),
        redis_dedupe_gib=round(dedupe_gib, 2),
        monthly_cost_usd=cost,
        warnings=warnings,
        assumptions=assumptions,
    )
