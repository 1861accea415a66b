"""`lambdalake deliver` (stream -> lake raw zone, DLQ -> errors zone, hour manifests) and
`lambdalake replay` (archived dead letters, or archived raw events, back into the stream)."""

from __future__ import annotations

import json
import logging
import signal
from datetime import UTC, datetime
from typing import Any

import typer

from lambdalake import heap
from lambdalake.errors import LambdalakeError
from lambdalake.settings import get_settings


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise LambdalakeError(f"{option} {value!r}: use ISO 8601, e.g. 2026-01-01T00:00Z") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def deliver(
    errors: bool = typer.Option(
        True, "--errors/--no-errors", help="Also archive the DLQ stream into errors/."
    ),
) -> None:
    """Run the delivery consumer group (and the errors archive) until SIGTERM or Ctrl-C."""
    from ingest.delivery.service import DeliveryService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    service = DeliveryService(settings, archive_errors=errors)

    def _stop(_signum: int, _frame: Any) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    typer.echo(
        f"delivery: {settings.stream_name} -> {settings.lake_uri}/raw/events "
        f"(buffer {settings.delivery_buffer_mib:g} MiB / {settings.delivery_buffer_interval_s:g} s, "
        f"{settings.delivery_compression})",
        err=True,
    )
    heap.settle()  # after the clients exist, before the threads start
    service.run()


def replay(
    errors: bool = typer.Option(False, "--errors", help="Re-submit archived rejected events."),
    lake_zone: str | None = typer.Option(None, "--lake", help="Re-inject a lake zone's events (only 'raw')."),
    since: str | None = typer.Option(None, "--since", help="--errors: only letters failed at or after this."),
    source: list[str] = typer.Option([], "--source", help="--errors: only these sources (repeatable)."),
    from_: str | None = typer.Option(None, "--from", help="--lake: event time from (inclusive)."),
    to: str | None = typer.Option(None, "--to", help="--lake: event time to (exclusive)."),
) -> None:
    """Replay dead letters (`--errors`) or raw events (`--lake raw --from … --to …`) into the stream."""
    from ingest.delivery.replay import replay_errors, replay_lake
    from lambdalake.stream import get_bus

    if errors == (lake_zone is not None):
        raise LambdalakeError("choose one: --errors, or --lake raw --from … --to …")
    settings = get_settings()
    bus = get_bus(settings)

    def progress(message: str) -> None:
        typer.echo(message, err=True)

    if errors:
        report = replay_errors(settings, bus, _parse_time(since, "--since"), source, progress)
        typer.echo(json.dumps(report.__dict__))
        return
    if lake_zone != "raw":
        raise LambdalakeError(f"--lake {lake_zone!r}: only the raw zone holds stream events")
    start, end = _parse_time(from_, "--from"), _parse_time(to, "--to")
    if start is None or end is None:
        raise LambdalakeError("--lake raw needs --from and --to (event time, ISO 8601)")
    count = replay_lake(settings, bus, start, end, progress)
    typer.echo(json.dumps({"reinjected": count}))


def register(app: typer.Typer) -> None:
    app.command()(deliver)
    app.command()(replay)
