"""`lambdalake speed`: run the speed layer's consumer groups (views, alerts, enrich) until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import typer

from lambdalake import heap
from lambdalake.errors import LambdalakeError
from lambdalake.settings import get_settings


def speed(
    groups: str = typer.Option("views,alerts,enrich", "--groups", help="Consumer groups, comma-separated."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Worker processes (they split the shards)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Serve /metrics here (default: consumer_metrics_port; +i for worker i)."
    ),
    worker_of: str = typer.Option(
        "", "--worker-of", hidden=True, help="'i/n': a worker the first one started."
    ),
) -> None:
    """Keep the Redis views, alerts and enriched orders fresh; SIGTERM stops cleanly."""
    from speed_layer.service import SpeedService, parse_groups

    settings = get_settings()
    try:
        chosen = parse_groups(groups)
    except ValueError as exc:
        raise LambdalakeError(str(exc)) from None
    port = metrics_port if metrics_port is not None else settings.consumer_metrics_port
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambdalake",
                "speed",
                "--groups",
                ",".join(chosen),
                "--metrics-port",
                str(port + i),
                "--worker-of",
                f"{i + 1}/{workers}",
            ],
            env=os.environ.copy(),
        )
        for i in range(1, workers)
    ]
    stopped = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    index, total = worker_of.split("/") if worker_of else ("1", str(workers))
    typer.echo(
        f"speed worker {index} of {total}: groups {', '.join(chosen)}; metrics http://127.0.0.1:{port}/metrics",
        err=True,
    )
    try:
        service = SpeedService(settings, chosen, metrics_port=port or None)
        heap.settle()  # after the clients and the compiled catalogue exist, before the threads start
        service.run_until(stopped)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=settings.consumer_shutdown_timeout_s + 10)
            except subprocess.TimeoutExpired:
                child.kill()


def register(app: typer.Typer) -> None:
    app.command()(speed)
