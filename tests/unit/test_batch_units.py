"""Pure parts of the batch orchestration: the watermark's contiguity rule, the suites' failures on
bad rows (real Great Expectations on small frames), interval parsing and the Airflow environment."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from batch import gates
from batch.compaction import RawFile, committed, merged_name, plan_runs, rebuilt_manifest, trash_at
from batch.watermark import contiguous_end, hour_start
from ingest.delivery.layout import DataFileName
from lambdalake.cli.airflow import airflow_env, write_passwords
from lambdalake.cli.batch import interval
from lambdalake.errors import LambdalakeError
from lambdalake.metrics.catalogue import load_catalogue
from tests.conftest import make_settings

H = timedelta(hours=1)
T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_contiguous_end_stops_at_a_hole_or_a_reprocessing_hour() -> None:
    assert contiguous_end([]) is None
    assert contiguous_end([(T0 + H, False), (T0, False), (T0 + 3 * H, False)]) == T0 + H
    assert contiguous_end([(T0, False), (T0 + H, True), (T0 + 2 * H, False)]) == T0
    assert contiguous_end([(T0, True), (T0 + H, False)]) is None
    assert hour_start(datetime(2026, 1, 1, 10, 59, 59)) == T0  # naive is UTC


def _suite(step: str, name: str, tmp_path: Path) -> tuple[gates.Suite, object]:
    settings = make_settings(tmp_path)
    suites = {s.name: s for s in gates.hourly_suites(settings)[step]}
    return suites[name], load_catalogue(settings.metric_catalogues)


def _ok(suite: gates.Suite, catalogue: object, df: pd.DataFrame) -> tuple[bool, list[str]]:
    result = gates.validate(f"unit_{suite.name}", suite.frame(df, T0), suite.expectations(catalogue))
    return bool(result["success"]), gates._summary(result)


def _clean_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"],
            "event_type": ["page_view", "purchase"],
            "user_key": ["u1", "u2"],
            "ts": [T0 + timedelta(minutes=1), T0 + timedelta(minutes=59)],
        }
    )


@pytest.mark.slow
def test_clean_suite_passes_good_rows_and_fails_each_defect(tmp_path: Path) -> None:
    suite, catalogue = _suite("clean", "clean_events", tmp_path)
    assert _ok(suite, catalogue, _clean_rows()) == (True, [])
    duplicate = _clean_rows().assign(event_id="00000000-0000-4000-8000-000000000001")
    assert _ok(suite, catalogue, duplicate)[1] == [
        "expect_column_values_to_be_unique[event_id] (2 unexpected)"
    ]
    null_key = _clean_rows().assign(user_key=["u1", None])
    assert (
        "expect_column_values_to_not_be_null[user_key] (1 unexpected)" in _ok(suite, catalogue, null_key)[1]
    )
    unknown = _clean_rows().assign(event_type=["page_view", "teleport"])
    assert _ok(suite, catalogue, unknown)[1] == [
        "expect_column_values_to_be_in_set[event_type] (1 unexpected)"
    ]
    late = _clean_rows().assign(ts=[T0, T0 + H])
    assert _ok(suite, catalogue, late)[1] == [
        "expect_column_values_to_be_between[ts_offset_s] (1 unexpected)"
    ]


@pytest.mark.slow
def test_orders_suite_fails_a_negative_amount(tmp_path: Path) -> None:
    suite, catalogue = _suite("curated", "orders", tmp_path)
    rows = pd.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "event_id": ["e1", "e2"],
            "ts": [T0, T0 + timedelta(minutes=5)],
            "user_key": ["u1", "u2"],
            "amount": [10.0, 3.5],
            "items_count": [1, 2],
            "units": [1, 3],
            "promo_discount_pct": [None, 10.0],
        }
    )
    assert _ok(suite, catalogue, rows) == (True, [])
    ok, failed = _ok(suite, catalogue, rows.assign(amount=[10.0, -1.0]))
    assert not ok
    assert failed == ["expect_column_values_to_be_between[amount] (1 unexpected)"]


@pytest.mark.slow
def test_many_hours_gate_checks_each_row_against_its_own_hour(tmp_path: Path) -> None:
    """Three hours of clean events validated in one GE run: an event id repeated in another hour and
    late-hour timestamps pass (as hour by hour), and only the hour with a duplicate inside fails."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_jobs.schemas import CLEAN_EVENTS

    root = tmp_path / "lake"
    settings = make_settings(tmp_path, lake_uri_override=root.as_uri())
    first, second, third = T0, T0 + H, T0 + 2 * H
    frames = {
        first: _clean_rows(),
        second: _clean_rows().assign(ts=[second, second + timedelta(minutes=59)]),  # same ids, next hour
        third: _clean_rows().assign(
            event_id="00000000-0000-4000-8000-000000000003", ts=[third, third + timedelta(minutes=1)]
        ),
    }
    for hour, df in frames.items():
        folder = root / CLEAN_EVENTS / gates.partition(hour, "hour")
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "part-0.parquet")
    suite, catalogue = _suite("clean", "clean_events", tmp_path)
    results = gates.run_suite_many(settings, suite, [third, first, second], catalogue)
    assert [(r.start, r.rows, r.success) for r in results] == [
        (first, 2, True),
        (second, 2, True),
        (third, 2, False),
    ]
    assert results[2].failed == ["expect_compound_columns_to_be_unique[_interval,event_id] (2 unexpected)"]
    with pytest.raises(
        gates.GateFailed, match=r"failing hours 2026-01-01T12 failed: clean_events 2026-01-01T12"
    ):
        gates._conclude("clean", [first, second, third], results)
    assert gates.catalogue_of(settings) is gates.catalogue_of(settings)  # read once per process


def test_batch_interval_parsing() -> None:
    assert interval("2026-01-01T10", None, None) == (T0, T0 + H)
    assert interval(None, "2026-01-01T10", "2026-01-02T00") == (T0, datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(LambdalakeError):
        interval("2026-01-01T10", "2026-01-01T10", None)
    with pytest.raises(LambdalakeError):
        interval(None, "2026-01-01T10", "2026-01-01T09")
    with pytest.raises(LambdalakeError):
        interval("tomorrow", None, None)


def test_airflow_environment_is_local_and_self_contained(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, airflow_port=18780, airflow_parallelism=3)
    env = airflow_env(settings, base={"PATH": "/usr/bin"})
    home = tmp_path / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18780"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).name == "dags"
    assert (Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "lambdalake_hourly.py").exists()
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["LAMBDALAKE_HOME"] == str(tmp_path)
    # the interpreter's bin first: Airflow starts its components as `airflow <component>` from PATH
    assert env["PATH"] == f"{Path(sys.executable).parent}:/usr/bin"
    passwords = write_passwords(settings)
    assert str(passwords) == env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.read_text() == '{"admin": "lambdalake-admin"}'


def _raw(shard: str, first: int, last: int, size: int, rows: int = 3) -> RawFile:
    name = DataFileName(shard, str(first), str(last))
    return RawFile(f"file:///lake/{name.name}", name, rows, size)


def test_compaction_packs_each_shards_consecutive_files_up_to_the_target() -> None:
    files = [
        _raw("s1", 30, 39, 40),
        _raw("s1", 1, 9, 40),
        _raw("s1", 10, 19, 40),
        _raw("s1", 20, 29, 40),
        _raw("s2", 5, 6, 500),  # already past the target: stays alone
        _raw("s2", 7, 8, 10),
        _raw("s3", 1, 2, 10),  # a single file: nothing to merge
    ]
    runs = plan_runs(files, target_bytes=100)
    assert [[f.name.name for f in run] for run in runs] == [
        ["part-s1-1-9.parquet", "part-s1-10-19.parquet"],
        ["part-s1-20-29.parquet", "part-s1-30-39.parquet"],
    ]
    assert [merged_name(run).name for run in runs] == ["part-s1-1-19.parquet", "part-s1-20-39.parquet"]
    assert plan_runs([_raw("s1", 1, 2, 10)], 100) == []
    # sequence numbers compare as integers (Kinesis numbers are wider than their text order suggests)
    wide = plan_runs([_raw("s1", 100, 199, 1), _raw("s1", 20, 99, 1)], 100)
    assert merged_name(wide[0]).name == "part-s1-20-199.parquet"


def test_compaction_merges_only_files_delivery_checkpointed_past() -> None:
    name = DataFileName("s1", "10", "19")
    assert committed(name, {})  # no lease: nothing delivers the shard
    assert committed(name, {"s1": "19"})
    assert committed(name, {"s1": "SHARD_END"})
    assert not committed(name, {"s1": "18"})
    assert not committed(name, {"s1": "TRIM_HORIZON"})  # nothing checkpointed yet
    assert committed(name, {"s2": "1"})


def test_compacted_manifest_keeps_its_version_and_recounts_rows() -> None:
    old = {
        "manifest_format": 1,
        "hour": "2026-01-01T10",
        "version": 3,
        "closed_at": "x",
        "rows": 9,
        "files": [],
    }
    new = rebuilt_manifest(
        old, T0, [_raw("s1", 1, 9, 40, rows=5), _raw("s2", 1, 4, 40, rows=4)], {"generation": 1}
    )
    assert (new["version"], new["closed_at"], new["hour"], new["rows"]) == (3, "x", "2026-01-01T10", 9)
    assert [f["name"] for f in new["files"]] == ["part-s1-1-9.parquet", "part-s2-1-4.parquet"]
    assert new["shards"]["s2"]["rows"] == 4
    assert new["compaction"] == {"generation": 1}
    assert "version" not in rebuilt_manifest({"rows": 0}, T0, [], None)  # absent stays absent
    assert trash_at("file:///l/raw/_compacted/at=2026-01-02T030405/run/replaced/x.parquet") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert trash_at("file:///l/raw/_compacted/x.parquet") is None


def test_spark_passes_run_on_over_empty_hours_and_stop_at_kept_or_open_ones() -> None:
    from batch.pipeline import HourPlan, spark_passes

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    states = ["process", "empty", "empty", "process", "current", "process", "empty", "open", "process"]
    plans = [HourPlan(t0 + timedelta(hours=i), state) for i, state in enumerate(states)]
    hour = [p.hour for p in plans]
    # quiet hours inside a pass are skipped, not a reason for a new pass; a published or open hour is
    assert spark_passes(list(reversed(plans))) == [[hour[0], hour[3]], [hour[5]], [hour[8]]]
    assert spark_passes([HourPlan(t0, "empty"), HourPlan(t0 + timedelta(hours=1), "current")]) == []
