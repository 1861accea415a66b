"""`lambdalake send FILE`: post an NDJSON file of events to the collector, with a progress bar."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import typer

from lambdalake.errors import LambdalakeError
from lambdalake.settings import get_settings

if TYPE_CHECKING:
    from ingest.send import Item, Sender, SendReport


def send(
    file: str = typer.Argument(..., help="NDJSON file (one event per line), or - for stdin."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Collector base URL (default: LAMBDALAKE_SDK_ENDPOINT, else the local one)."
    ),
    write_key: str | None = typer.Option(
        None, "--write-key", help="Write key (default: the first of LAMBDALAKE_WRITE_KEYS)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, max=500, help="Events per request (default from settings: 100)."
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, max=64, help="Requests in flight at once (1 keeps file order)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> Any:
    """Send every line to the collector; print accepted/rejected counts. Exits 1 if any were not sent."""
    from ingest.producer import default_endpoint
    from ingest.send import Sender, read_items

    settings = get_settings()
    key = write_key or (settings.write_keys[0] if settings.write_keys else None)
    if not key:
        raise LambdalakeError("no write key: pass --write-key or set LAMBDALAKE_WRITE_KEYS")
    stream, total = _open(file)
    url = (endpoint or default_endpoint(settings)).rstrip("/")
    sender = Sender(
        url,
        key,
        batch_size=min(batch_size or settings.send_batch_size, settings.collector_max_events),
        max_bytes=settings.collector_max_body_bytes,
        concurrency=concurrency or settings.send_concurrency,
        max_retries=settings.producer_max_retries,
        backoff_base_s=settings.producer_backoff_base_s,
        backoff_cap_s=settings.producer_backoff_cap_s,
        timeout_s=settings.producer_request_timeout_s,
    )
    try:
        if progress:
            report = _send_with_progress(sender, read_items(stream), total, file)
        else:
            report = sender.send(read_items(stream))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()

    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(
            f"{report.lines} lines: {report.accepted} accepted, {report.rejected} rejected "
            f"({report.invalid_json} not JSON), {report.not_sent} not sent; "
            f"{report.requests} requests ({report.retries} retries) to {url}"
        )
        for reason, count in report.reasons.most_common(5):
            typer.echo(f"  {count:>7}  {reason}")
        for example in report.examples:
            typer.echo(f"  e.g. {example}")
        if report.failure:
            typer.secho(f"error: {report.failure}", err=True, fg=typer.colors.RED)
    if not report.ok:
        raise typer.Exit(1)
    return report  # for callers in Python (the demo waits for the speed layer to apply them all)


def _open(file: str) -> tuple[BinaryIO, int | None]:
    """The input stream and its size in bytes when known (for the progress bar)."""
    if file == "-":
        return sys.stdin.buffer, None
    path = Path(file)
    if not path.is_file():
        raise LambdalakeError(f"{file}: no such file (pass an NDJSON file, or - for stdin)")
    return path.open("rb"), path.stat().st_size


def _send_with_progress(sender: Sender, items: Iterable[Item], total: int | None, label: str) -> SendReport:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(f"send {label}", total=total, counts="")

        def update(done: int, report: SendReport) -> None:
            counts = f"{report.accepted} accepted, {report.rejected} rejected"
            bar.update(task, completed=done, counts=counts)

        sender.on_progress = update
        return sender.send(items)


def register(app: typer.Typer) -> None:
    app.command()(send)
