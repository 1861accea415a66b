"""`lambdalake collector`: serve the collector HTTP API with uvicorn on 127.0.0.1."""

from __future__ import annotations

import os
import shutil

import typer

from lambdalake.errors import LambdalakeError
from lambdalake.settings import env_name, get_settings

APP_FACTORY = "ingest.collector.app:create_app"


def collector() -> None:
    """Serve the collector (port, worker count and limits from settings) until interrupted."""
    import uvicorn

    from ingest.collector import PROMETHEUS_MULTIPROC_ENV
    from lambdalake.local.services import port_is_free

    settings = get_settings()
    port = settings.collector_port
    if not port_is_free(port):
        raise LambdalakeError(
            f"port {port} for the collector is in use: set {env_name('collector_port')} to a free port"
        )
    # Every worker writes its metrics here and /metrics sums them (prometheus_client multiprocess
    # mode). Set before any worker imports prometheus_client; one directory per port, emptied, so
    # a previous run's counts never leak in.
    metrics_dir = settings.run_dir / f"collector-{port}-metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[PROMETHEUS_MULTIPROC_ENV] = str(metrics_dir)
    typer.echo(
        f"collector: http://127.0.0.1:{port} "
        f"({settings.collector_workers} worker(s), bus {settings.collector_bus})",
        err=True,
    )
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=settings.bind_host,
        port=port,
        workers=settings.collector_workers,
        access_log=settings.collector_access_log,
        log_level="info",
        timeout_graceful_shutdown=int(settings.collector_shutdown_timeout_s),
        server_header=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(collector)
