"""lambdalake_maintenance: compaction of small raw files, then retention of the raw and error zones.

Compaction merges each shard's small delivery files of the closed raw hours of the last
`LAMBDALAKE_BATCH_COMPACTION_LOOKBACK_DAYS` into files of about `LAMBDALAKE_BATCH_COMPACTION_TARGET_MIB`
(manifest rewritten at the same version: nothing is reprocessed), and deletes files it replaced more
than `LAMBDALAKE_BATCH_COMPACTION_GRACE_HOURS` ago. Retention deletes hour partitions older than
`LAMBDALAKE_BATCH_RAW_RETENTION_DAYS`. Both are relative to the run's data interval end (not the wall
clock), so a rerun does the same; a run triggered by hand without a data interval uses the time it
was triggered. Logic lives in `batch.maintenance` and `batch.compaction`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 1, "retry_delay": timedelta(minutes=30)}


def _moment(data_interval_end: datetime | None, dag_run: Any) -> datetime:
    """The run's reference time: its data interval end, else (a manual run) when it was triggered."""
    moment = data_interval_end or getattr(dag_run, "run_after", None)
    if moment is None:
        raise ValueError("a maintenance run with neither a data interval nor a run_after time")
    return moment


@dag(
    dag_id="lambdalake_maintenance",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lambdalake", "maintenance"],
    doc_md=__doc__,
)
def lambdalake_maintenance() -> None:
    @task
    def compaction(data_interval_end: datetime | None = None, dag_run: Any = None) -> dict[str, int]:
        from batch.maintenance import compact_recent
        from lambdalake.settings import get_settings

        report = compact_recent(get_settings(), _moment(data_interval_end, dag_run), print)
        return {
            "compacted": report.count("compacted"),
            "current": report.count("current"),
            "skipped": report.count("skipped"),
            "purged": report.purged,
        }

    @task
    def retention(data_interval_end: datetime | None = None, dag_run: Any = None) -> int:
        from batch.maintenance import apply_retention
        from lambdalake.settings import get_settings

        return apply_retention(get_settings(), _moment(data_interval_end, dag_run))

    compaction() >> retention()


lambdalake_maintenance()
