"""The DAGs: every file loads into a DagBag with the conventions, and one `dag.test()` of the hourly
DAG over a generated hour runs clean → gates → publish and advances the batch watermark."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pyspark.sql import SparkSession

from batch.watermark import Watermark
from lambdalake.settings import Settings, get_settings
from tests.integration.test_batch_pipeline import write_corrupted_hour
from tests.integration.test_spark_pipeline import START, write_raw_lake
from tests.spark_fixtures import spark

__all__ = ["spark"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]
DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_IDS = {"lambdalake_hourly", "lambdalake_daily", "lambdalake_reference", "lambdalake_maintenance"}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Airflow reads its configuration once, at import: the environment is set before that."""
    home = tmp_path_factory.mktemp("airflow")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_loads_with_the_conventions(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    for dag_id in DAG_IDS:
        dag = dagbag.dags[dag_id]
        assert dag.doc_md, dag_id
        assert "lambdalake" in dag.tags, dag_id
        assert dag.catchup is False, dag_id  # explicit in every file: history goes through backfills
        assert Path(dag.fileloc).stem == dag_id
        for task in dag.tasks:
            assert task.owner == "lambdalake", (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)


def test_hourly_chain_is_clean_gate_aggregates_gate_publish_watermark(dagbag: Any) -> None:
    dag = dagbag.dags["lambdalake_hourly"]
    order = [t.task_id for t in dag.topological_sort()]
    assert order == [
        "interval",
        "wait_for_manifest",
        "needs_processing",
        "clean",
        "gate_clean",
        "aggregates",
        "gate_curated",
        "publish",
        "advance_watermark",
    ]


@pytest.fixture
def task_settings(engines: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The settings the DAG's tasks read from the environment, pointing at the test engines."""
    write_raw_lake(tmp_path / "lake", events=300)
    values = {
        "LAMBDALAKE_PROFILE": "local",
        "LAMBDALAKE_HOME": str(engines.home),
        "LAMBDALAKE_WAREHOUSE_PORT": str(engines.warehouse_port),
        "LAMBDALAKE_REDIS_PORT": str(engines.redis_port),
        "LAMBDALAKE_LAKE_URI": (tmp_path / "lake").as_uri(),
        "LAMBDALAKE_WAREHOUSE_SCHEMA": "test_dag_wh",
        "LAMBDALAKE_BATCH_META_SCHEMA": "test_dag_meta",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    with psycopg.connect(settings.warehouse_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS test_dag_wh CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS test_dag_meta CASCADE")
    yield settings
    get_settings.cache_clear()


def test_hourly_dag_run_publishes_the_hour_and_advances_the_watermark(
    dagbag: Any, task_settings: Settings, spark: SparkSession
) -> None:
    from airflow.utils.db import initdb
    from airflow.utils.state import DagRunState, TaskInstanceState

    initdb()
    dag = copy.deepcopy(dagbag.dags["lambdalake_hourly"])
    for task in dag.tasks:  # dag.test() would wait out retry_delay before failing the gate's run
        task.retries = 0
    run = dag.test(logical_date=START)
    assert run.state == DagRunState.SUCCESS
    assert Watermark(task_settings).watermark() == START
    assert Watermark(task_settings).published_version(START) == 1
    with psycopg.connect(task_settings.warehouse_dsn) as conn:
        facts = conn.execute("SELECT count(*) FROM test_dag_wh.fact_events_v1").fetchone()[0]
    assert facts > 0

    # a corrupted hour: its gate fails the run, and nothing of it is published
    bad_hour = START + timedelta(hours=3)
    write_corrupted_hour(Path(task_settings.lake_uri.removeprefix("file://")), bad_hour)
    failed = dag.test(logical_date=bad_hour)
    assert failed.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in failed.get_task_instances()}
    assert states["gate_curated"] == TaskInstanceState.FAILED
    assert states["publish"] != TaskInstanceState.SUCCESS
    assert Watermark(task_settings).watermark() == START
    assert Watermark(task_settings).published_version(bad_hour) is None
    with psycopg.connect(task_settings.warehouse_dsn) as conn:
        after = conn.execute("SELECT count(*) FROM test_dag_wh.fact_events_v1").fetchone()[0]
    assert after == facts

    # Triggered by hand (no logical date, as the UI and REST API do in Airflow 3): the last complete
    # hour before the trigger, or the hour given as a parameter. Both are up to date: no work.
    # (one at a time: dag.test() without a logical date clears every earlier run's task instances)
    for run_after, conf in (
        (START + timedelta(hours=1, minutes=10), None),
        (bad_hour + timedelta(hours=5), {"hour": f"{START:%Y-%m-%dT%H}"}),
    ):
        manual = dag.test(run_after=run_after, logical_date=None, run_conf=conf)
        assert manual.state == DagRunState.SUCCESS
        states = _states(manual)
        assert states.get("needs_processing") == TaskInstanceState.SUCCESS, (manual.run_id, states)
        assert states["clean"] == TaskInstanceState.SKIPPED
        assert _xcom(manual, "interval") == START.isoformat()


def _states(run: Any) -> dict[str, Any]:
    """Task states of a run by run_id (``get_task_instances`` finds none when it has no logical date)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {ti.task_id: ti.state for ti in rows}


def _xcom(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(run_id=run.run_id, task_id=task_id, key="return_value").one()
        return XComModel.deserialize_value(row)
