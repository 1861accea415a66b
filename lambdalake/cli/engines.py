"""`lambdalake up | down | status`: the local profile's engines."""

from __future__ import annotations

import json

import typer

from lambdalake.settings import get_settings


def up() -> None:
    """Start kinesalite, redis-server and PostgreSQL (idempotent); create the streams and the database."""
    from lambdalake.local.services import LocalEngines

    LocalEngines(get_settings()).up(progress=typer.echo)


def down() -> None:
    """Stop the local engines (their data stays under .lambdalake/)."""
    from lambdalake.local.services import LocalEngines

    LocalEngines(get_settings()).down(progress=typer.echo)


def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON document: name, url, pid, healthy."),
) -> None:
    """Show each local engine: URL, pid and whether it answers. Exits 1 if any is not healthy."""
    from lambdalake.local.services import LocalEngines

    rows = LocalEngines(get_settings()).status()
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("engine", "url", "pid", "healthy")
        for row in rows:
            healthy = "[green]yes[/green]" if row["healthy"] else "[red]no[/red]"
            table.add_row(str(row["name"]), str(row["url"]), str(row["pid"] or "-"), healthy)
        Console().print(table)
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
