"""Compaction of small raw files on a real lake directory, real Redis (delivery's lock, dirty hours and
checkpoints) and, for the batch layer's view of it, real Spark and PostgreSQL: every row kept once,
fewer files, the manifest listing only them at the same version, reruns that change nothing, an
interrupted run leaving a readable hour that the next run finishes, and a published hour that is
neither reprocessed nor changed by it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis as redis_lib
from pyspark.sql import SparkSession

from batch import compaction
from batch.compaction import compact_hours
from batch.pipeline import process_hours
from batch.watermark import Watermark
from ingest.delivery.layout import DataFileName, hour_key, raw_hour_prefix
from ingest.delivery.manifest import HourCloser, HourState, build_manifest, hour_files, read_manifest
from ingest.delivery.processor import delivery_config
from ingest.delivery.schema import RAW_SCHEMA
from ingest.generator import ClickstreamGenerator, GeneratorConfig
from lambdalake.consumer.leases import NewLease, RedisLeaseStore
from lambdalake.contract import EventValidator
from lambdalake.lake import REFERENCE_PRODUCTS, REFERENCE_PROMOS
from lambdalake.settings import Settings
from tests.integration.test_batch_pipeline import _digests
from tests.spark_fixtures import spark

__all__ = ["spark"]
pytestmark = [pytest.mark.integration]
START = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
SHARDS = ("shardId-000000000000", "shardId-000000000001")
ROWS_PER_FILE = 5


def write_delivery_lake(
    root: Path, settings: Settings, events: int = 500, seed: int = 7, events_per_s: float = 0.05
) -> list[datetime]:
    """Raw hours as delivery leaves them after a quiet stream: per shard, many files of a few rows
    named by sequence range, and a manifest per hour (``build_manifest``); plus the reference CSVs.
    Generated events include duplicate copies (same event_id), which compaction must keep."""
    generator = ClickstreamGenerator(
        GeneratorConfig(
            events=events, seed=seed, events_per_s=events_per_s, duplicate_rate=0.05, late_rate=0.0
        )
    )
    validator = EventValidator()
    cells: dict[tuple[datetime, str], list[dict[str, Any]]] = defaultdict(list)
    for sequence, line in enumerate(generator.lines()):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if validator.validate(event):
            continue
        ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).astimezone(UTC)
        received = ts + timedelta(seconds=1 + sequence % 7)
        shard = SHARDS[sequence % len(SHARDS)]
        cells[(ts.replace(minute=0, second=0, microsecond=0), shard)].append(
            {
                "event_id": event["event_id"],
                "event_type": event["event_type"],
                "schema_version": 1,
                "user_id": event.get("user_id"),
                "anonymous_id": event.get("anonymous_id"),
                "session_id": event.get("session_id"),
                "ts": ts,
                "received_at": received,
                "properties": json.dumps(event["properties"]),
                "context": json.dumps(event["context"]),
                "shard_id": shard,
                "sequence_number": str(10**20 + sequence),
                "arrival_ts": received,
            }
        )
    for (hour, _shard), rows in cells.items():
        folder = root / raw_hour_prefix(hour)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(rows), ROWS_PER_FILE):
            part = rows[i : i + ROWS_PER_FILE]
            name = DataFileName(part[0]["shard_id"], part[0]["sequence_number"], part[-1]["sequence_number"])
            pq.write_table(
                pa.Table.from_pylist(part, schema=RAW_SCHEMA), folder / name.name, compression="zstd"
            )
    hours = sorted({hour for hour, _ in cells})
    for hour in hours:
        closed = hour + H + timedelta(minutes=11)
        manifest = build_manifest(
            hour, hour_files(settings, hour), 1, closed, int(closed.timestamp() * 1000), 600
        )
        (root / raw_hour_prefix(hour) / "_manifest.json").write_bytes(orjson.dumps(manifest))
    for path, data in (
        (REFERENCE_PRODUCTS, generator.products_csv()),
        (REFERENCE_PROMOS, generator.promos_csv()),
    ):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return hours


def lake_settings(engines: Settings, root: Path, name: str, **overrides: Any) -> Settings:
    """The engines' settings on a lake of its own, with delivery state in Redis of its own."""
    return engines.model_copy(
        update={
            "lake_uri_override": root.as_uri(),
            "delivery_key_prefix": f"test-{name}:delivery",
            "consumer_key_prefix": f"test-{name}:consumer",
            "warehouse_schema": f"test_{name}_wh",
            "batch_meta_schema": f"test_{name}_meta",
            **overrides,
        }
    )


def data_files(root: Path, hour: datetime) -> list[Path]:
    return sorted(p for p in (root / raw_hour_prefix(hour)).iterdir() if DataFileName.parse(p.name))


def ids(files: list[Path]) -> Counter[str]:
    """The multiset of event_ids in the files."""
    return Counter(i for f in files for i in pq.read_table(f, columns=["event_id"]).column(0).to_pylist())


def manifest_files(root: Path, settings: Settings, hour: datetime) -> list[Path]:
    manifest = read_manifest(settings, hour)
    assert manifest is not None
    return [root / raw_hour_prefix(hour) / entry["name"] for entry in manifest["files"]]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the lake's raw zone (data, manifests, trash) by path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "raw").rglob("*")) if p.is_file()
    }


def _redis(settings: Settings) -> Any:
    return redis_lib.Redis.from_url(settings.redis_url)


@pytest.fixture
def lake(
    engines: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Path, Settings, list[datetime]]:
    root = tmp_path / "lake"
    name = "compact_" + request.node.name.split("[")[-1].rstrip("]").replace("-", "_")[-24:]
    settings = lake_settings(engines, root, name.lower(), batch_compaction_grace_hours=24.0)
    client = _redis(settings)
    for key in client.scan_iter(f"test-{name.lower()}:*"):
        client.delete(key)
    return root, settings, write_delivery_lake(root, settings)


def test_compaction_keeps_every_row_once_in_fewer_files_and_reruns_as_a_no_op(
    lake: tuple[Path, Settings, list[datetime]],
) -> None:
    root, settings, hours = lake
    before = {
        h: (ids(data_files(root, h)), len(data_files(root, h)), read_manifest(settings, h)) for h in hours
    }
    assert all(count > 2 * len(SHARDS) for _, count, _ in before.values())  # many small files per hour
    lines: list[str] = []
    now = START + timedelta(days=1)

    report = compact_hours(settings, START, START + 24 * H, now, lines.append)

    assert [(r.hour, r.state) for r in report.hours] == [(h, "compacted") for h in hours]
    for hour in hours:
        expected_ids, _count, old = before[hour]
        files = data_files(root, hour)
        assert len(files) == len(SHARDS)  # one file per shard: all of them are far below the target
        assert ids(files) == expected_ids  # the same rows, duplicates included, none twice
        manifest = read_manifest(settings, hour)
        assert manifest is not None
        assert old is not None
        assert sorted(e["name"] for e in manifest["files"]) == [f.name for f in files]
        assert manifest["rows"] == old["rows"] == sum(expected_ids.values())
        assert manifest["version"] == old["version"] == 1  # not late data
        assert (manifest["closed_at"], manifest["watermark"]) == (old["closed_at"], old["watermark"])
        assert manifest["compaction"]["generation"] == 1
        assert manifest["compaction"]["files_replaced"] == before[hour][1]
        for f in files:  # a merged file is still a delivery file of its shard's whole range
            name = DataFileName.parse(f.name)
            assert name is not None
            assert int(name.first_sequence) == min(
                int(e["min_sequence"]) for e in old["files"] if e["shard_id"] == name.shard_id
            )
    assert any(line.startswith(f"{hours[0]:%Y-%m-%dT%H}: {before[hours[0]][1]} files -> 2") for line in lines)
    trash = sorted((root / compaction.TRASH).rglob("*.parquet"))
    assert len(trash) == sum(count for _, count, _ in before.values())  # replaced files kept for the grace

    after = snapshot(root)
    rerun = compact_hours(settings, START, START + 24 * H, now + H)
    assert [r.state for r in rerun.hours] == ["current"] * len(hours)
    assert rerun.purged == 0  # still within the grace period
    assert snapshot(root) == after

    late = compact_hours(settings, START, START + 24 * H, now + timedelta(hours=24))
    assert late.purged == len(trash)
    assert not list((root / compaction.TRASH).rglob("*.parquet"))
    assert {h: ids(data_files(root, h)) for h in hours} == {h: before[h][0] for h in hours}


def test_compaction_leaves_alone_what_delivery_may_still_change(
    lake: tuple[Path, Settings, list[datetime]],
) -> None:
    root, settings, hours = lake
    first, second, third = hours[:3]
    client = _redis(settings)
    # shard 1's checkpoint stops inside the first hour: its files after it may still be re-flushed
    shard1 = [f for f in data_files(root, first) if SHARDS[1] in f.name]
    cut = DataFileName.parse(shard1[2].name)
    assert cut is not None
    config = delivery_config(settings, settings.delivery_group, settings.stream_name)
    leases = RedisLeaseStore(client, config.group, config.key_prefix)
    leases.create_missing([NewLease(SHARDS[1], (), cut.last_sequence)])
    # the second hour is dirty (delivery wrote a file its manifest does not list yet)
    HourState(client, settings.delivery_key_prefix).record(SHARDS[0], None, 0, True, [hour_key(second)])
    # the third hour holds a file its manifest does not list (late data before the closer ran)
    stray = data_files(root, third)[0]
    extra = root / raw_hour_prefix(third) / "part-shardId-000000000009-1-2.parquet"
    extra.write_bytes(stray.read_bytes())
    untouched = {h: [f.name for f in data_files(root, h)] for h in (second, third)}

    report = {
        r.hour: r for r in compact_hours(settings, START, START + 24 * H, START + timedelta(days=1)).hours
    }

    assert report[first].state == "compacted"
    names = [f.name for f in data_files(root, first)]
    kept = [f.name for f in shard1[3:]]  # after the checkpoint: left as delivery wrote them
    assert set(kept) <= set(names)
    assert len(names) == 2 + len(kept)
    assert (report[second].state, report[second].reason) == (
        "skipped",
        "delivery wrote files not in its manifest yet",
    )
    assert report[third].state == "skipped"
    assert "not in the manifest" in report[third].reason
    assert {h: [f.name for f in data_files(root, h)] for h in (second, third)} == untouched


def test_late_data_after_compaction_gets_a_new_version_and_keeps_the_compaction_record(
    lake: tuple[Path, Settings, list[datetime]],
) -> None:
    root, settings, hours = lake
    hour = hours[0]
    compact_hours(settings, START, START + 24 * H, START + timedelta(days=1))
    compacted = read_manifest(settings, hour)
    assert compacted is not None
    assert compacted["compaction"]["generation"] == 1
    # a late record of a new shard lands in the compacted hour; delivery's closer closes it again
    late = root / raw_hour_prefix(hour) / "part-shardId-000000000009-1-2.parquet"
    late.write_bytes(data_files(root, hour)[0].read_bytes())
    state = HourState(_redis(settings), settings.delivery_key_prefix)
    state.record("shardId-000000000009", None, 0, True, [hour_key(hour)])
    generation = state.dirty()[hour_key(hour)]

    manifest = HourCloser(settings, state).close_hour(
        hour_key(hour), generation, int((hour + 2 * H).timestamp() * 1000), START + timedelta(days=2)
    )

    assert manifest is not None
    assert manifest["version"] == compacted["version"] + 1  # late data: the batch layer reprocesses
    assert manifest["compaction"] == compacted["compaction"]  # the hour's history is kept
    assert late.name in {f["name"] for f in manifest["files"]}
    assert read_manifest(settings, hour) == manifest


def _fail(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("simulated crash")


@pytest.mark.parametrize("crash", ["staged", "moved_in", "manifest_written"])
def test_an_interrupted_compaction_leaves_a_readable_hour_and_the_next_run_finishes_it(
    lake: tuple[Path, Settings, list[datetime]], crash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, settings, hours = lake
    hour = hours[0]
    expected = ids(data_files(root, hour))
    with monkeypatch.context() as patch:
        if crash == "staged":  # merged files written to the staging area, nothing moved in
            patch.setattr(compaction, "_move", _fail)
        elif crash == "moved_in":  # merged files in the partition, manifest not switched yet
            patch.setattr(compaction, "_write_manifest", _fail)
        else:  # manifest switched, replaced files still in the partition
            patch.setattr(compaction.Compactor, "retire", _fail)
        with pytest.raises(RuntimeError, match="simulated crash"):
            compact_hours(settings, hour, hour + H, START + timedelta(days=1))

    # readable: the manifest lists files that exist and hold every row exactly once
    listed = manifest_files(root, settings, hour)
    assert all(f.exists() for f in listed)
    assert ids(listed) == expected
    present = ids(data_files(root, hour))  # what a reader listing the partition sees: nothing lost
    assert set(present) == set(expected)
    assert all(present[i] >= n for i, n in expected.items())

    report = compact_hours(settings, hour, hour + H, START + timedelta(days=1, hours=1))
    (result,) = report.hours
    outcome = {
        "staged": ("compacted", False),  # nothing to repair: staged files are only in the trash
        "moved_in": ("compacted", True),  # merged files undone, then compacted again
        "manifest_written": ("current", True),  # replaced files moved out: the switch finished
    }
    assert (result.state, result.repaired > 0) == outcome[crash]
    files = data_files(root, hour)
    assert len(files) == len(SHARDS)
    assert sorted(f.name for f in manifest_files(root, settings, hour)) == [f.name for f in files]
    assert ids(files) == expected
    assert read_manifest(settings, hour)["rows"] == sum(expected.values())  # type: ignore[index]


@pytest.mark.slow
def test_batch_after_compaction_neither_reprocesses_nor_changes_a_published_hour(
    engines: Settings, tmp_path: Path, spark: SparkSession
) -> None:
    root = tmp_path / "lake"
    settings = lake_settings(engines, root, "compact_batch", batch_hours_per_job=24)
    with psycopg.connect(settings.warehouse_dsn, autocommit=True) as conn:
        for schema in (settings.warehouse_schema, settings.batch_meta_schema):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    hours = write_delivery_lake(root, settings)
    end = hours[-1] + H
    first = process_hours(settings, START, end, spark=spark)
    assert first.processed == hours
    published = _digests(root)

    report = compact_hours(settings, START, end, START + timedelta(days=1))
    assert [r.state for r in report.hours] == ["compacted"] * len(hours)

    again = process_hours(settings, START, end, spark=spark)
    assert (again.processed, again.skipped) == ([], hours)  # same manifest version: up to date
    assert {h: Watermark(settings).published_version(h) for h in hours} == dict.fromkeys(hours, 1)
    forced = process_hours(settings, START, end, force=True, spark=spark)  # gates reconcile the new files
    assert forced.processed == hours
    assert _digests(root) == published
