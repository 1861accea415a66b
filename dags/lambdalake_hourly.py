"""lambdalake_hourly: one hour of the lake → gated batch views in the warehouse → batch watermark.

Each run is one data interval (one UTC hour): wait until delivery closed the hour (its raw
`_manifest.json`, or a later hour's, which means this one is closed and empty), decide whether the
hour needs work (a manifest version newer than the published one is late data: reprocess), then
clean → gate → aggregates → gate → publish (warehouse + partitions) → advance the watermark.
A run triggered by hand covers its `hour` parameter, else the last complete hour (Airflow 3 gives
such a run no data interval). Every task is idempotent over its hour; logic lives in
`batch.pipeline` and `batch.gates`.

History is loaded with `airflow backfill create --dag-id lambdalake_hourly --from-date … --to-date …`
(one run per hour) or, many hours per Spark job, `lambdalake batch --from … --to …`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, PokeReturnValue, dag, task

if TYPE_CHECKING:
    from lambdalake.settings import Settings

DEFAULT_ARGS = {"owner": "lambdalake", "retries": 2, "retry_delay": timedelta(minutes=5)}


def _settings() -> Settings:
    from lambdalake.settings import get_settings

    return get_settings()


def _hour(hour: str) -> datetime:
    return datetime.fromisoformat(hour)


@dag(
    dag_id="lambdalake_hourly",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    tags=["lambdalake", "batch", "hourly"],
    params={
        "hour": Param(
            None,
            type=["null", "string"],
            description="For a run triggered by hand: the UTC hour to process, e.g. 2026-01-01T10 "
            "(default: its data interval, else the last complete hour).",
        )
    },
    doc_md=__doc__,
)
def lambdalake_hourly() -> None:
    @task
    def interval(
        params: dict[str, Any] | None = None,
        data_interval_start: datetime | None = None,
        dag_run: Any = None,
    ) -> str:
        """The hour this run covers (a manual run may have no data interval in Airflow 3)."""
        from batch.intervals import run_hour

        requested = (params or {}).get("hour")
        return run_hour(data_interval_start, requested, getattr(dag_run, "run_after", None)).isoformat()

    @task.sensor(poke_interval=60, timeout=6 * 3600, mode="reschedule")
    def wait_for_manifest(hour: str) -> PokeReturnValue:
        from batch.pipeline import manifest_state

        state, _ = manifest_state(_settings(), _hour(hour))
        return PokeReturnValue(is_done=state != "open", xcom_value=state)

    @task.short_circuit
    def needs_processing(hour: str) -> int | bool:
        """The manifest version to process (truthy), or False when the hour is empty or up to date;
        the watermark later records this version, not a newer one that landed meanwhile."""
        from batch.pipeline import EMPTY_VERSION, plan_hour
        from batch.watermark import Watermark

        settings = _settings()
        store = Watermark(settings)
        plan = plan_hour(settings, _hour(hour), store)
        if plan.state == "empty":
            store.mark_published(plan.hour, EMPTY_VERSION)
        if plan.state != "process":
            return False
        store.mark_reprocessing(plan.hour)
        return int(plan.version or 1)

    @task
    def clean(hour: str) -> None:
        from batch.pipeline import clean_step

        clean_step(_settings(), [_hour(hour)])

    @task
    def gate_clean(hour: str) -> None:
        from batch.gates import gate_clean
        from batch.pipeline import manifest_state

        settings = _settings()
        _, manifest = manifest_state(settings, _hour(hour))
        gate_clean(settings, _hour(hour), int((manifest or {}).get("rows", 0)))

    @task
    def aggregates(hour: str) -> None:
        from batch.pipeline import aggregates_step

        aggregates_step(_settings(), [_hour(hour)])

    @task
    def gate_curated(hour: str) -> None:
        from batch.gates import gate_curated

        gate_curated(_settings(), _hour(hour))

    @task
    def publish(hour: str) -> None:
        from batch.pipeline import publish_step

        publish_step(_settings(), _hour(hour))

    @task
    def advance_watermark(version: int, hour: str) -> str | None:
        from batch.watermark import Watermark

        store = Watermark(_settings())
        store.mark_published(_hour(hour), version)
        mark = store.watermark()
        return mark.isoformat() if mark else None

    hour = interval()
    version = needs_processing(hour)
    wait_for_manifest(hour) >> version
    (
        version
        >> clean(hour)
        >> gate_clean(hour)
        >> aggregates(hour)
        >> gate_curated(hour)
        >> publish(hour)
        >> advance_watermark(version, hour)  # type: ignore[arg-type]
    )


lambdalake_hourly()
