"""lambdalake_reference: reference data (products, promos) gated, then loaded as warehouse dimensions.

The lake's `reference/` CSVs are the source; the gate checks ids and ranges before the dimensions
are replaced. Logic lives in `batch.pipeline.publish_reference`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 2, "retry_delay": timedelta(minutes=10)}


@dag(
    dag_id="lambdalake_reference",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lambdalake", "batch", "reference"],
    doc_md=__doc__,
)
def lambdalake_reference() -> None:
    @task
    def publish_reference() -> int:
        from batch.pipeline import publish_reference
        from lambdalake.settings import get_settings

        return publish_reference(get_settings())

    publish_reference()


lambdalake_reference()
