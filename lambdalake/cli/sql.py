"""`lambdalake sql`: ad hoc SQL on the warehouse or the lake; `lambdalake warehouse`: set up, publish."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from lambdalake.errors import LambdalakeError
from lambdalake.settings import get_settings

warehouse_app = typer.Typer(help="Warehouse (Redshift / PostgreSQL) and Athena catalog (Glue / DuckDB).")


def sql(
    query: str | None = typer.Argument(None, help="The SQL to run (or --file; - reads stdin)."),
    file: Path | None = typer.Option(None, "--file", "-f", exists=True, dir_okay=False, help="A .sql file."),
    engine: str = typer.Option(
        "warehouse",
        "--engine",
        "-e",
        help="warehouse: Redshift (PostgreSQL locally); athena: Athena over the lake (DuckDB locally).",
    ),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
) -> None:
    """Run one SQL statement and print its rows."""
    from warehouse.query import format_result, run_query

    if engine not in ("warehouse", "athena"):
        raise typer.BadParameter("choose warehouse or athena", param_hint="--engine")
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("choose table, csv or json", param_hint="--format")
    if (query is None) == (file is None):
        raise typer.BadParameter("give the SQL as an argument or with --file, not both")
    text = file.read_text() if file is not None else (sys.stdin.read() if query == "-" else str(query))
    try:
        result = run_query(text, engine, get_settings())  # type: ignore[arg-type]
    except LambdalakeError:
        raise
    except Exception as exc:  # the engine's own message (syntax, unknown table) is what the user needs
        raise LambdalakeError(f"{engine}: {str(exc).strip()}") from exc
    typer.echo(format_result(result, fmt))  # type: ignore[arg-type]


def _hour(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO hour (e.g. 2026-01-01T05)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@warehouse_app.command("init")
def init(
    athena: bool = typer.Option(True, "--athena/--no-athena", help="Also create the Glue database (aws)."),
) -> None:
    """Create the warehouse schema, tables and BI views (and the Glue tables on aws); idempotent."""
    from warehouse.query import warehouse_loader

    settings = get_settings()
    warehouse_loader(settings).ensure_schema()
    typer.echo(f"warehouse: schema {settings.warehouse_schema} ready", err=True)
    if athena and not settings.is_local:
        from warehouse.athena import GlueCatalog

        GlueCatalog(settings).ensure()
        typer.echo(f"glue: database {settings.glue_database} ready", err=True)


@warehouse_app.command("publish")
def publish(
    hour: str = typer.Argument(..., help="The hour whose batch views are published (ISO, UTC)."),
    table: list[str] | None = typer.Option(None, "--table", "-t", help="Only these tables (repeatable)."),
) -> None:
    """Load an hour into the warehouse (daily tables: its day) and register its Athena partitions."""
    from warehouse.query import warehouse_loader

    settings = get_settings()
    moment = _hour(hour)
    for result in warehouse_loader(settings).publish_hour(moment, table or None):
        typer.echo(f"{result.table} {result.interval}: {result.rows} rows, {result.files} files", err=True)
    if not settings.is_local:
        from warehouse.athena import GlueCatalog

        created = GlueCatalog(settings).register_partitions(moment)
        typer.echo(f"glue: {created} new partitions", err=True)


def register(app: typer.Typer) -> None:
    app.command()(sql)
    app.add_typer(warehouse_app, name="warehouse")
