"""lambdalake_daily: the day's tables (metrics, products, categories, funnel, users) and sessions.

Runs once a UTC day has ended and its 24 hours are published by `lambdalake_hourly` (the batch
watermark has passed the day's last hour); Spark → gates → the day's warehouse tables.
Logic lives in `batch.pipeline.process_day`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import PokeReturnValue, dag, task

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 2, "retry_delay": timedelta(minutes=10)}


@dag(
    dag_id="lambdalake_daily",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["lambdalake", "batch", "daily"],
    doc_md=__doc__,
)
def lambdalake_daily() -> None:
    @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
    def wait_for_hours(data_interval_end: datetime | None = None) -> PokeReturnValue:
        from batch.watermark import HOUR, Watermark
        from lambdalake.settings import get_settings

        mark = Watermark(get_settings()).watermark()
        return PokeReturnValue(is_done=mark is not None and mark + HOUR >= data_interval_end)

    @task
    def daily_tables(data_interval_start: datetime | None = None) -> int:
        from batch.pipeline import process_day
        from lambdalake.settings import get_settings

        return process_day(get_settings(), data_interval_start)

    wait_for_hours() >> daily_tables()


lambdalake_daily()
