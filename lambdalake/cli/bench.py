"""`lambdalake bench <name>`: each layer's benchmark, ending with one JSON line of its figures."""

from __future__ import annotations

import importlib
import inspect
import json

import typer

# name -> "module:function"; the function takes (quick: bool, progress: Callable[[str], None])
# and returns the figures as a dict. Each layer adds its own line.
BENCHMARKS: dict[str, str] = {
    "contract": "bench.contract:run",
    "collector": "bench.collector:run",
    "batch": "bench.batch:run",
    "speed": "bench.speed:run",
    "delivery": "bench.delivery:run",
    "warehouse": "bench.warehouse:run",
    "serving": "bench.serving:run",
    "backfill": "bench.backfill:run",
}


def bench(
    name: str | None = typer.Argument(None, help=f"Which benchmark: {', '.join(BENCHMARKS)}."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run that finishes in under a minute."),
    list_: bool = typer.Option(False, "--list", help="Print the benchmark names, one a line."),
    events: int | None = typer.Option(
        None, "--events", min=1, help="How many events, for the benchmarks that take a size (batch)."
    ),
) -> None:
    """Run one benchmark; progress goes to stderr, the last line on stdout is its JSON figures."""
    if list_:
        typer.echo("\n".join(BENCHMARKS))
        return
    if name is None:
        raise typer.BadParameter("name a benchmark (see --list)")
    if name not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    module_name, func_name = BENCHMARKS[name].split(":")
    run = getattr(importlib.import_module(module_name), func_name)
    options = {}
    if events is not None:
        if "events" not in inspect.signature(run).parameters:
            raise typer.BadParameter(f"benchmark {name!r} does not take --events")
        options["events"] = events
    figures = run(quick=quick, progress=lambda msg: typer.echo(msg, err=True), **options)
    typer.echo(json.dumps(figures))


def register(app: typer.Typer) -> None:
    app.command()(bench)
