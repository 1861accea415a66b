"""lambdalake_daily: the day's tables (metrics, products, categories, funnel, users) and sessions.

Runs once a UTC day has ended and its 24 hours are published by `lambdalake_hourly` (the batch
watermark has passed the day's last hour); Spark → gates → the day's warehouse tables.
A run triggered by hand covers its `day` parameter, else yesterday. Logic lives in
`batch.pipeline.process_day`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, PokeReturnValue, dag, task

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 2, "retry_delay": timedelta(minutes=10)}


@dag(
    dag_id="lambdalake_daily",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["lambdalake", "batch", "daily"],
    params={
        "day": Param(
            None,
            type=["null", "string"],
            description="For a run triggered by hand: the UTC day, e.g. 2026-01-01 "
            "(default: its data interval, else yesterday).",
        )
    },
    doc_md=__doc__,
)
def lambdalake_daily() -> None:
    @task
    def interval(
        params: dict[str, Any] | None = None,
        data_interval_start: datetime | None = None,
        dag_run: Any = None,
    ) -> str:
        """The day this run covers (a manual run may have no data interval in Airflow 3)."""
        from batch.intervals import run_day

        requested = (params or {}).get("day")
        return run_day(data_interval_start, requested, getattr(dag_run, "run_after", None)).isoformat()

    @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
    def wait_for_hours(day: str) -> PokeReturnValue:
        from batch.intervals import DAY
        from batch.watermark import HOUR, Watermark
        from lambdalake.settings import get_settings

        mark = Watermark(get_settings()).watermark()
        end = datetime.fromisoformat(day) + DAY
        return PokeReturnValue(is_done=mark is not None and mark + HOUR >= end)

    @task
    def daily_tables(day: str) -> int:
        from batch.pipeline import process_day
        from lambdalake.settings import get_settings

        return process_day(get_settings(), datetime.fromisoformat(day))

    day = interval()
    wait_for_hours(day) >> daily_tables(day)


lambdalake_daily()
