"""lambdalake_maintenance: retention of the lake's raw and error zones.

Deletes hour partitions older than `LAMBDALAKE_BATCH_RAW_RETENTION_DAYS`, relative to the run's data
interval (not the wall clock), so a rerun deletes the same files. Logic lives in `batch.maintenance`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 1, "retry_delay": timedelta(minutes=30)}


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
    def retention(data_interval_end: datetime | None = None) -> int:
        from batch.maintenance import apply_retention
        from lambdalake.settings import get_settings

        return apply_retention(get_settings(), data_interval_end)

    retention()


lambdalake_maintenance()
