"""`lambdalake batch`: the hourly batch pipeline over hours, without the scheduler.

It calls the functions the `lambdalake_hourly` DAG's tasks call (batch.pipeline), directly rather
than through `dag.test()`: one Spark session and many hours per Spark job, which is what a backfill
of months needs, and no Airflow metadata database to set up first.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import typer

from lambdalake.errors import LambdalakeError
from lambdalake.settings import get_settings


def parse_hour(value: str, option: str) -> datetime:
    """'2026-01-01T10' (or any ISO 8601 time) → the UTC hour holding it."""
    text = value if len(value) > 13 else f"{value}:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise LambdalakeError(f"{option} {value!r}: use an hour such as 2026-01-01T10") from exc
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def interval(hour: str | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    if hour is not None:
        if start is not None or end is not None:
            raise LambdalakeError("use either --hour or --from/--to")
        first = parse_hour(hour, "--hour")
        return first, first + timedelta(hours=1)
    if start is None or end is None:
        raise LambdalakeError("give --hour, or both --from and --to (exclusive)")
    first, stop = parse_hour(start, "--from"), parse_hour(end, "--to")
    if stop <= first:
        raise LambdalakeError("--to must be after --from")
    return first, stop


def batch(
    hour: str | None = typer.Option(None, "--hour", help="One hour, e.g. 2026-01-01T10."),
    start: str | None = typer.Option(None, "--from", help="First hour of a range."),
    end: str | None = typer.Option(None, "--to", help="End of the range (exclusive)."),
    force: bool = typer.Option(False, "--force", help="Reprocess hours already published at their version."),
    compact: bool = typer.Option(
        False,
        "--compact",
        help="Instead: merge the small raw files of the closed hours (what the maintenance DAG does); "
        "manifests keep their version, so nothing is reprocessed.",
    ),
) -> None:
    """Clean, gate, aggregate, publish and advance the batch watermark for hours whose manifest exists."""
    first, stop = interval(hour, start, end)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if compact:
        if force:
            raise LambdalakeError("--force does not apply to --compact")
        run_compaction(first, stop)
        return
    from batch.pipeline import process_hours

    report = process_hours(
        get_settings(), first, stop, lambda msg: typer.echo(f"batch: {msg}", err=True), force
    )
    typer.echo(
        f"processed {len(report.processed)} hours, {len(report.empty)} empty, "
        f"{len(report.skipped)} up to date, "
        f"{len(report.waiting)} waiting for a manifest; "
        f"watermark {report.watermark.isoformat() if report.watermark else 'none'}"
    )


def run_compaction(first: datetime, stop: datetime) -> None:
    from batch.compaction import compact_hours

    report = compact_hours(
        get_settings(), first, stop, progress=lambda msg: typer.echo(f"compact: {msg}", err=True)
    )
    typer.echo(
        f"compacted {report.count('compacted')} hours, {report.count('current')} up to date, "
        f"{report.count('skipped')} skipped; {report.purged} replaced files purged"
    )


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
