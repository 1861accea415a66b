"""`lambdalake generate`: a realistic e-commerce clickstream as NDJSON, plus reference data."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from lambdalake.settings import get_settings


def _parse_start(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date-time (e.g. 2026-01-01T00:00:00Z)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def generate(
    events: int = typer.Option(10_000, "--events", "-n", min=0, help="How many lines to write."),
    seed: int = typer.Option(42, "--seed", help="Same seed and options, same bytes."),
    start: str | None = typer.Option(
        None,
        "--start",
        help="Event time of the first session (ISO; default 2026-01-01T00:00Z, or now with --rate).",
    ),
    rate: float | None = typer.Option(
        None, "--rate", min=0.001, help="Pace output in real time at this many events/s (live demos)."
    ),
    events_per_s: float = typer.Option(
        20.0, "--events-per-s", min=0.001, help="Simulated traffic without --rate: sets the event-time span."
    ),
    out: str = typer.Option("-", "--out", "-o", help="NDJSON file to write, or - for stdout."),
    reference: bool = typer.Option(
        True,
        "--reference/--no-reference",
        help="Also write products and promos CSV to the lake's reference/ zone.",
    ),
    duplicate_rate: float = typer.Option(
        0.01, min=0.0, max=0.99, help="Share of events resent by the client."
    ),
    late_rate: float = typer.Option(0.01, min=0.0, max=0.99, help="Share arriving minutes to hours late."),
    out_of_order_rate: float = typer.Option(
        0.02, min=0.0, max=0.99, help="Share arriving seconds out of order."
    ),
    malformed_rate: float = typer.Option(0.005, min=0.0, max=0.99, help="Share of malformed events."),
    products: int = typer.Option(200, min=1, help="Catalog size."),
) -> None:
    """Write NDJSON events in arrival order (duplicates, late, out-of-order and malformed ones included)."""
    from ingest.generator import DEFAULT_START, ClickstreamGenerator, GeneratorConfig
    from lambdalake import lake

    first = _parse_start(start) or (datetime.now(UTC).replace(microsecond=0) if rate else DEFAULT_START)
    config = GeneratorConfig(
        events=events,
        seed=seed,
        start=first,
        events_per_s=rate or events_per_s,
        products=products,
        duplicate_rate=duplicate_rate,
        late_rate=late_rate,
        out_of_order_rate=out_of_order_rate,
        malformed_rate=malformed_rate,
    )
    generator = ClickstreamGenerator(config)
    settings = get_settings()
    if reference:
        generator.write_reference(settings)
        typer.echo(f"reference data: {lake.join(settings.lake_uri, 'reference')}", err=True)

    sink = sys.stdout.buffer if out == "-" else Path(out).open("wb")  # noqa: SIM115 - closed below
    start_ms = first.timestamp() * 1000
    wall0 = time.monotonic()
    written = 0
    try:
        from rich.progress import Progress

        with Progress(transient=True, disable=out == "-" and rate is None) as progress:
            task = progress.add_task("generating", total=events)
            for item in generator.emitted():
                if rate:
                    wait = (item.arrival_ms - start_ms) / 1000 - (time.monotonic() - wall0)
                    if wait > 0:
                        time.sleep(wait)
                sink.write(item.line + b"\n")
                written += 1
                if rate:
                    sink.flush()
                if written % 5000 == 0:
                    progress.update(task, completed=written)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        return
    finally:
        if sink is not sys.stdout.buffer:
            sink.close()
    if out != "-":
        typer.echo(f"wrote {written} events to {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command()(generate)
