"""lambdalake_hourly: one hour of the lake → gated batch views in the warehouse → batch watermark.

Each run is one data interval (one UTC hour): wait until delivery closed the hour (its raw
`_manifest.json`, or a later hour's, which means this one is closed and empty), decide whether the
hour needs work (a manifest version newer than the published one is late data: reprocess), then
clean → gate → aggregates → gate → publish (warehouse + partitions) → advance the watermark.
Every task is idempotent over its interval; logic lives in `batch.pipeline` and `batch.gates`.

History is loaded with `airflow backfill create --dag-id lambdalake_hourly --from-date … --to-date …`
(one run per hour) or, many hours per Spark job, `lambdalake batch --from … --to …`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow.sdk import PokeReturnValue, dag, task

if TYPE_CHECKING:
    from lambdalake.settings import Settings

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _settings() -> Settings:
    from lambdalake.settings import get_settings

    return get_settings()


@dag(
    dag_id="lambdalake_hourly",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    tags=["lambdalake", "batch", "hourly"],
    doc_md=__doc__,
)
def lambdalake_hourly() -> None:
    @task.sensor(poke_interval=60, timeout=6 * 3600, mode="reschedule")
    def wait_for_manifest(data_interval_start: datetime | None = None) -> PokeReturnValue:
        from batch.pipeline import manifest_state

        state, _ = manifest_state(_settings(), data_interval_start)
        return PokeReturnValue(is_done=state != "open", xcom_value=state)

    @task.short_circuit
    def needs_processing(data_interval_start: datetime | None = None) -> int | bool:
        """The manifest version to process (truthy), or False when the hour is empty or up to date;
        the watermark later records this version, not a newer one that landed meanwhile."""
        from batch.pipeline import EMPTY_VERSION, plan_hour
        from batch.watermark import Watermark

        settings = _settings()
        store = Watermark(settings)
        plan = plan_hour(settings, data_interval_start, store)
        if plan.state == "empty":
            store.mark_published(plan.hour, EMPTY_VERSION)
        if plan.state != "process":
            return False
        store.mark_reprocessing(plan.hour)
        return int(plan.version or 1)

    @task
    def clean(data_interval_start: datetime | None = None) -> None:
        from batch.pipeline import clean_step

        clean_step(_settings(), [data_interval_start])

    @task
    def gate_clean(data_interval_start: datetime | None = None) -> None:
        from batch.gates import gate_clean
        from batch.pipeline import manifest_state

        settings = _settings()
        _, manifest = manifest_state(settings, data_interval_start)
        gate_clean(settings, data_interval_start, int((manifest or {}).get("rows", 0)))

    @task
    def aggregates(data_interval_start: datetime | None = None) -> None:
        from batch.pipeline import aggregates_step

        aggregates_step(_settings(), [data_interval_start])

    @task
    def gate_curated(data_interval_start: datetime | None = None) -> None:
        from batch.gates import gate_curated

        gate_curated(_settings(), data_interval_start)

    @task
    def publish(data_interval_start: datetime | None = None) -> None:
        from batch.pipeline import publish_step

        publish_step(_settings(), data_interval_start)

    @task
    def advance_watermark(version: int, data_interval_start: datetime | None = None) -> str | None:
        from batch.watermark import Watermark

        store = Watermark(_settings())
        store.mark_published(data_interval_start, version)
        mark = store.watermark()
        return mark.isoformat() if mark else None

    version = needs_processing()
    wait_for_manifest() >> version
    (
        version
        >> clean()
        >> gate_clean()
        >> aggregates()
        >> gate_curated()
        >> publish()
        >> advance_watermark(version)  # type: ignore[arg-type]
    )


lambdalake_hourly()
