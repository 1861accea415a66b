"""`lambdalake capacity`: every figure below is computed by hand from the limits and prices."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lambdalake.capacity import CapacityInput, plan
from lambdalake.cli import app
from lambdalake.errors import LambdalakeError


def test_reads_bind_when_four_groups_share_a_shard() -> None:
    # 2000 events/s × 1 KiB = 1.953 MiB/s written: 2 shards by bytes, 2 by records; read by 4
    # groups = 7.81 MiB/s at 2 MiB/s per shard = 4 shards.
    p = plan(CapacityInput(2000, 1, headroom=0))
    assert (p.shards_for_write_bytes, p.shards_for_write_records, p.shards_for_reads) == (2, 2, 4)
    assert p.shards == 4
    assert p.binding_limit == "reads"
    assert p.consumer_groups == ["views", "alerts", "enrich", "delivery"]
    assert p.write_mib_s == pytest.approx(1.9531, abs=1e-4)
    assert p.read_mib_s == pytest.approx(7.8125, abs=1e-4)
    assert (p.speed_workers, p.delivery_workers) == (1, 1)  # 2000/4500, 2000/10000


def test_delivery_buffers_for_one_kib_events() -> None:
    # Per shard: 500 events/s, 0.488 MiB/s. 64 MiB would take 131 s, but 10,000 records per flush
    # come after 20 s: 20 s, ceil(0.488 × 20) = 10 MiB, 10,000 records.
    p = plan(CapacityInput(2000, 1, headroom=0))
    assert p.delivery_buffer_interval_s == 20
    assert p.delivery_buffer_mib == 10
    assert p.delivery_buffer_records == 10000


def test_delivery_buffers_for_large_events_are_size_bound() -> None:
    # 100 events/s × 100 KiB on 25 shards (below): 0.3906 MiB/s per shard, 64 MiB in 163.8 s,
    # 4 events/s per shard -> 10,000 records would take 2,500 s; size comes first.
    p = plan(CapacityInput(100, 100, headroom=0.25))
    assert p.delivery_buffer_interval_s == pytest.approx(163.8, abs=0.1)
    assert p.delivery_buffer_mib == 64
    assert p.delivery_buffer_records == 656  # ceil(4 × 163.84)


def test_records_bind_for_small_events() -> None:
    # 5000 events/s × 0.1 KiB = 0.488 MiB/s: 1 shard by bytes, 1 by reads (0.977 MiB/s), 5 by records.
    p = plan(CapacityInput(5000, 0.1, headroom=0))
    assert (p.shards_for_write_bytes, p.shards_for_write_records, p.shards_for_reads) == (1, 5, 1)
    assert p.shards == 5
    assert p.binding_limit == "write records"
    assert p.speed_workers == 2  # ceil(5000 / 4500)
    assert plan(CapacityInput(12000, 0.1, headroom=0)).speed_workers == 3  # ceil(12000 / 4500)


def test_headroom_sizes_for_the_peak() -> None:
    # 2000 × 1.25 = 2500 events/s = 2.441 MiB/s: bytes 3, records 3, reads ceil(9.766 / 2) = 5.
    p = plan(CapacityInput(2000, 1, headroom=0.25))
    assert p.peak_events_per_s == 2500
    assert p.shards == 5


def test_large_events_need_many_shards() -> None:
    # 125 events/s × 100 KiB = 12.207 MiB/s: 13 shards by bytes, 1 by records, 25 by reads.
    p = plan(CapacityInput(100, 100, headroom=0.25))
    assert (p.shards_for_write_bytes, p.shards_for_write_records, p.shards_for_reads) == (13, 1, 25)
    assert p.shards == 25


def test_workers_never_outnumber_shards() -> None:
    p = plan(CapacityInput(900, 0.5, headroom=0, speed_worker_events_s=100))
    assert p.shards == 1
    assert p.speed_workers == 1  # 9 would be needed, but one shard has one lease per group


def test_monthly_cost_provisioned_and_on_demand() -> None:
    # A month = 730 h = 2,628,000 s: 5.256e9 events of 1 KiB = 5012.5 GiB.
    p = plan(CapacityInput(2000, 1, headroom=0))
    cost = p.monthly_cost_usd
    assert cost["provisioned"]["shard_hours"] == 43.80  # 4 × 730 × 0.015
    assert cost["provisioned"]["put_payload_units"] == 73.58  # 5256 M units × 0.014
    assert cost["provisioned"]["extended_retention"] == 0
    assert cost["on_demand"]["stream_hours"] == 29.20  # 730 × 0.04
    assert cost["on_demand"]["data_in"] == 401.00  # 5012.5 × 0.08
    assert cost["on_demand"]["data_out"] == 802.00  # 4 groups × 5012.5 × 0.04
    assert p.raw_gb_per_month == 601.5  # 5012.5 × 0.12
    shared = cost["shared"]
    assert shared["raw_zone_storage_first_month"] == 13.83  # 601.5 × 0.023
    assert shared["raw_zone_puts"] == 2.63  # 4 shards × 2,628,000 s / 20 s = 525,600 files
    assert shared["consumer_workers_fargate"] == 72.08  # 2 × 730 × (0.04048 + 2 × 0.004445)
    assert cost["provisioned"]["total"] == pytest.approx(43.80 + 73.58 + 13.83 + 2.63 + 72.08, abs=0.02)
    assert cost["on_demand"]["total"] == pytest.approx(29.20 + 401 + 802 + 13.83 + 2.63 + 72.08, abs=0.02)


def test_put_payload_units_round_up_per_25_kib() -> None:
    # 100 KiB records are 4 units each: 2.628e8 events × 4 = 1051.2 M units × 0.014 = 14.72.
    p = plan(CapacityInput(100, 100, headroom=0))
    assert p.monthly_cost_usd["provisioned"]["put_payload_units"] == 14.72


def test_extended_retention() -> None:
    # Provisioned: 4 shards × 730 × 0.02 = 58.40. On-demand: 144 h beyond 24 of 6.866 GiB/h = 988.8 GiB × 0.10.
    p = plan(CapacityInput(2000, 1, headroom=0, retention_hours=168))
    assert p.monthly_cost_usd["provisioned"]["extended_retention"] == 58.40
    assert p.monthly_cost_usd["on_demand"]["extended_retention"] == 98.88


def test_get_records_budget_warning() -> None:
    # 4 groups every 0.2 s = 20 calls per shard per second; the limit is 5: poll every 0.8 s at least.
    noisy = plan(CapacityInput(2000, 1))
    assert noisy.get_records_calls_per_shard_s == 20
    assert noisy.min_idle_poll_s == 0.8
    assert any("LAMBDALAKE_CONSUMER_IDLE_POLL_S to at least 0.8" in w for w in noisy.warnings)
    quiet = plan(CapacityInput(2000, 1, consumer_idle_poll_s=0.8))
    assert quiet.get_records_calls_per_shard_s == 5
    assert not any("GetRecords" in w for w in quiet.warnings)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"events_per_s": 0, "avg_event_kb": 1},
        {"events_per_s": 10, "avg_event_kb": 2048},
        {"events_per_s": 10, "avg_event_kb": 1, "retention_hours": 12},
        {"events_per_s": 10, "avg_event_kb": 1, "headroom": -0.5},
    ],
)
def test_impossible_inputs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be|at most|are required"):
        CapacityInput(**kwargs)


def test_cli_json() -> None:
    result = CliRunner().invoke(app, ["capacity", "--events-per-s", "2000", "--avg-event-kb", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["shards"] == 5
    assert doc["inputs"]["headroom"] == 0.25
    assert set(doc["monthly_cost_usd"]) == {"provisioned", "on_demand", "shared"}


def test_cli_table_states_assumptions() -> None:
    args = ["capacity", "--events-per-s", "2000", "--avg-event-kb", "1", "--headroom", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "shards         4" in result.output
    assert "bound by reads" in result.output
    assert "assumptions" in result.output
    assert "us-east-1" in result.output


def test_cli_refuses_bad_input() -> None:
    result = CliRunner().invoke(app, ["capacity", "--events-per-s", "-1", "--avg-event-kb", "1"])
    assert isinstance(result.exception, LambdalakeError)


def test_redis_dedupe_sets_grow_with_traffic_and_the_dedupe_ttl() -> None:
    # 1000 events/s, no headroom: (86400 + 3600) s × 1000 × 80 bytes × (2 + 0.05) groups
    p = plan(CapacityInput(events_per_s=1000, avg_event_kb=1, headroom=0))
    assert p.redis_dedupe_gib == round(1000 * 90000 * 80 * 2.05 / 1024**3, 2) == 13.75
    shorter = plan(CapacityInput(events_per_s=1000, avg_event_kb=1, headroom=0, dedupe_ttl_s=3600))
    assert shorter.redis_dedupe_gib == round(1000 * 7200 * 80 * 2.05 / 1024**3, 2)
