"""`lambdalake demo` (what `make demo` runs): the platform end to end on the local profile.

Each layer adds its step here as it lands; today: start the engines, generate a sample of recent
traffic (a few closed hours plus the current one) with reference data, send it through the
collector onto the stream (rejects go to the dead-letter stream), and say where everything is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from lambdalake.settings import get_settings


def demo(
    events: int = typer.Option(20_000, "--events", "-n", min=1, help="Size of the generated sample."),
    hours: int = typer.Option(3, "--hours", min=1, help="How many past hours the sample covers."),
    seed: int = typer.Option(42, "--seed"),
) -> None:
    """Start the engines, generate a sample, and print where to look."""
    from ingest.collector.process import CollectorProcess
    from ingest.generator import ClickstreamGenerator, GeneratorConfig
    from lambdalake import lake
    from lambdalake.cli.engines import status
    from lambdalake.cli.send import send
    from lambdalake.local.services import LocalEngines

    settings = get_settings()
    typer.secho("1/4 local engines", bold=True)
    LocalEngines(settings).up(progress=lambda msg: typer.echo(f"    {msg}"))

    typer.secho(f"2/4 sample: {events:,} events over the last {hours} hours", bold=True)
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    span_s = max((now - start).total_seconds(), 1.0)
    generator = ClickstreamGenerator(
        GeneratorConfig(events=events, seed=seed, start=start, events_per_s=events / span_s)
    )
    sample = settings.home / "demo" / "events.ndjson"
    sample.parent.mkdir(parents=True, exist_ok=True)
    with sample.open("wb") as out:
        for line in generator.lines():
            out.write(line + b"\n")
    lake.write_bytes(
        lake.join(settings.lake_uri, lake.REFERENCE_PRODUCTS), generator.products_csv(), settings
    )
    lake.write_bytes(lake.join(settings.lake_uri, lake.REFERENCE_PROMOS), generator.promos_csv(), settings)
    typer.echo(f"    wrote {sample}")

    typer.secho(f"3/4 collector on 127.0.0.1:{settings.collector_port}: sending the sample", bold=True)
    with CollectorProcess(settings):
        send(
            file=str(sample),
            endpoint=None,
            write_key=None,
            batch_size=None,
            concurrency=None,
            progress=True,
            as_json=False,
        )

    typer.secho("4/4 where to look", bold=True)
    status(as_json=False)
    rows = [
        ("sample events (NDJSON)", str(sample)),
        ("lake", settings.lake_uri),
        ("reference data", lake.join(settings.lake_uri, "reference")),
        (
            "stream",
            f"{settings.stream_name} ({settings.stream_shards} shards) at {settings.kinesis_endpoint}",
        ),
        ("dead letters", f"{settings.dlq_stream_name} at {settings.kinesis_endpoint}"),
        ("Redis", settings.redis_url),
        (
            "warehouse",
            f"psql postgresql://{settings.warehouse_user}@127.0.0.1:{settings.warehouse_port}/{settings.warehouse_db}",
        ),
        ("engine logs", str(settings.log_dir)),
    ]
    for name, where in rows:
        typer.echo(f"    {name:<24} {where}")
    typer.echo("Stop the engines with `make down` (data is kept); `make demo` again resumes.")


def register(app: typer.Typer) -> None:
    app.command()(demo)
