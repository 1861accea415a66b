"""The `lambdalake` command line. Each command group lives in its own module and registers here."""

from __future__ import annotations

import sys

import typer

from lambdalake.errors import LambdalakeError

app = typer.Typer(
    name="lambdalake",
    help="lambdalake: lambda-architecture analytics platform (engines, ingestion, speed, batch, serving).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    # Imported here so that `lambdalake --help` stays fast: modules import heavy libraries lazily.
    from lambdalake.cli import (
        airflow,
        batch,
        bench,
        capacity,
        collector,
        deliver,
        demo,
        engines,
        generate,
        send,
        serve,
        speed,
        sql,
    )

    engines.register(app)
    generate.register(app)
    collector.register(app)
    speed.register(app)
    deliver.register(app)
    sql.register(app)
    send.register(app)
    bench.register(app)
    demo.register(app)
    batch.register(app)
    airflow.register(app)
    serve.register(app)
    capacity.register(app)


_register()


def main() -> None:
    """Console-script entry point: user-facing errors become one line on stderr and exit code 1.

    Usage errors (unknown options or commands) are click's: usage, one error line, exit code 2.
    """
    try:
        app()
    except LambdalakeError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
