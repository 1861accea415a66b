"""Backfills through Airflow itself: a backfill created the way the UI creates one (REST API) and one
created with `airflow backfill create` both run the hourly DAG on local Airflow (LocalExecutor, the
real tasks: manifest sensor, Spark clean and aggregates, GE gates, warehouse publish), and every hour
they cover ends published in the batch watermark with its rows in the warehouse."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from batch.watermark import Watermark
from lambdalake.cli.airflow import airflow_env
from lambdalake.local.process import ServiceProcess, settings_environment
from lambdalake.settings import Settings
from tests.conftest import free_port
from tests.integration.test_airflow_local import admin_headers, airflow_ready
from tests.integration.test_spark_pipeline import START, write_raw_lake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG = "lambdalake_hourly"
H = timedelta(hours=1)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
# Local Airflow keeps its metadata in SQLite, where creating a backfill is refused ("Database is
# locked", 503) while the scheduler writes: the UI's user clicks again, the test retries.
LOCKED_RETRIES = 10


def _runs(base: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{base}/api/v2/dags/{DAG}/dagRuns", headers=headers, timeout=30).json()
    return {r["logical_date"][:13]: r for r in body["dag_runs"]}


def _failed_tasks(base: str, headers: dict[str, str], run_id: str) -> list[str]:
    body = httpx.get(
        f"{base}/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances", headers=headers, timeout=30
    ).json()
    return [
        f"{t['task_id']}: {t['state']}"
        for t in body["task_instances"]
        if t["state"] in ("failed", "up_for_retry", "upstream_failed")
    ]


def _wait_success(base: str, headers: dict[str, str], wanted: list[str], timeout_s: float) -> dict[str, Any]:
    """The runs of these hours once all succeeded; fails at the first failed task (no retry waits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = _runs(base, headers)
        states = {hour: runs[hour]["state"] if hour in runs else "not created" for hour in wanted}
        for hour in wanted:
            if hour in runs:
                failing = _failed_tasks(base, headers, runs[hour]["dag_run_id"])
                assert not failing, f"{hour}: {failing}"
        if all(state == "success" for state in states.values()):
            return runs
        assert "failed" not in states.values(), states
        assert time.monotonic() < deadline, f"backfill runs not done in {timeout_s:.0f} s: {states}"
        time.sleep(5)


def test_backfills_from_the_api_and_the_cli_publish_every_hour(engines: Settings, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    expected = write_raw_lake(root, events=900)  # hours 00 and 01, and 02 holding one resent copy
    third = START + 2 * H
    assert expected["hours"] == [START, START + H, third]
    settings = engines.model_copy(
        update={
            "home": tmp_path / "home",
            "lake_uri_override": root.as_uri(),
            "warehouse_schema": "test_backfill_wh",
            "batch_meta_schema": "test_backfill_meta",
            "airflow_port": free_port(),
            "airflow_parallelism": 2,
        }
    )
    base = f"http://127.0.0.1:{settings.airflow_port}"
    service = ServiceProcess(settings, ["airflow"], name="airflow", ready=lambda: airflow_ready(base))
    service.start(timeout_s=240)
    try:
        headers = admin_headers(settings, base)
        deadline = time.monotonic() + 120
        while httpx.get(f"{base}/api/v2/dags/{DAG}", headers=headers, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the DAG processor never parsed the hourly DAG"
            time.sleep(2)

        # Airflow runs a backfill's runs only for an unpaused DAG (the UI's dialog offers to unpause)
        unpaused = httpx.patch(
            f"{base}/api/v2/dags/{DAG}", headers=headers, json={"is_paused": False}, timeout=30
        )
        assert unpaused.status_code == 200, unpaused.text
        # what the UI's Backfill dialog posts: the first two hours
        body = {
            "dag_id": DAG,
            "from_date": START.isoformat(),
            "to_date": (START + H).isoformat(),
            "max_active_runs": 1,  # each hour dedupes against the clean hours before it
        }
        for _ in range(LOCKED_RETRIES):
            created = httpx.post(f"{base}/api/v2/backfills", headers=headers, json=body, timeout=60)
            if not (created.status_code == 503 and "locked" in created.text):
                break
            time.sleep(3)  # SQLite metadata: Airflow refuses while the scheduler holds the lock
        assert created.status_code == 200, created.text
        first = _wait_success(base, headers, [f"{h:%Y-%m-%dT%H}" for h in (START, START + H)], 900)
        backfill = f"{base}/api/v2/backfills/{created.json()['id']}"
        deadline = time.monotonic() + 120  # the scheduler closes a backfill on its next loop
        while httpx.get(backfill, headers=headers, timeout=30).json()["completed_at"] is None:
            assert time.monotonic() < deadline, "the backfill was never marked completed"
            time.sleep(2)

        # the CLI, with the environment `lambdalake airflow` gives its components: the third hour,
        # whose only event is a resent copy of an hour-00 event: the dedupe lookback drops it
        env = airflow_env(settings, {**os.environ, **settings_environment(settings)})
        for _ in range(LOCKED_RETRIES):
            cli = subprocess.run(
                [AIRFLOW, "backfill", "create", "--dag-id", DAG,
                 "--from-date", third.isoformat(), "--to-date", third.isoformat()],
                env=env, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            if cli.returncode == 0 or "locked" not in cli.stderr.lower():
                break
            time.sleep(3)
        assert cli.returncode == 0, cli.stderr[-2000:]
        last = _wait_success(base, headers, [f"{third:%Y-%m-%dT%H}"], 600)
        runs = first | last
        assert {runs[f"{h:%Y-%m-%dT%H}"]["run_type"] for h in expected["hours"]} == {"backfill"}
    finally:
        service.stop(timeout_s=60)

    store = Watermark(settings)
    assert [store.published_version(h) is not None for h in expected["hours"]] == [True, True, True]
    with psycopg.connect(settings.warehouse_dsn) as conn:
        events = conn.execute(f"SELECT count(*) FROM {settings.warehouse_schema}.fact_events_v1").fetchone()
        hours = conn.execute(
            "SELECT count(DISTINCT date_trunc('hour', bucket_start)) "
            f"FROM {settings.warehouse_schema}.agg_metrics_hourly_v1"
        ).fetchone()
    assert events is not None
    assert hours is not None
    assert events[0] == len(expected["ids"])  # every event once: the resent copy was dropped
    assert hours[0] == 2  # hours 00 and 01; hour 02 published with no rows
