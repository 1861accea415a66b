"""`lambdalake serve`: the serving API and dashboard with uvicorn on 127.0.0.1."""

from __future__ import annotations

import typer

from lambdalake.errors import LambdalakeError
from lambdalake.settings import env_name, get_settings

APP_FACTORY = "serving.api:create_app"


def serve(
    port: int | None = typer.Option(None, "--port", help="Port (default: setting serving_port, 8800)."),
) -> None:
    """Serve the reconciled metrics API, /docs and the dashboard until interrupted."""
    import uvicorn

    from lambdalake.local.services import port_is_free

    settings = get_settings()
    if port is not None:
        settings = settings.model_copy(update={"serving_port": port})
    if not port_is_free(settings.serving_port):
        raise LambdalakeError(
            f"port {settings.serving_port} for serving is in use: "
            f"pass --port or set {env_name('serving_port')}"
        )
    from serving.api import create_app

    key = settings.read_keys[0] if settings.read_keys else "<read key>"
    typer.echo(f"serving: http://127.0.0.1:{settings.serving_port}/?key={key} (API docs at /docs)", err=True)
    # One process: the maintenance thread and the watermark cache are per process, and the
    # endpoints are threads already (blocking engine calls run in FastAPI's thread pool).
    uvicorn.run(
        create_app(settings),
        host=settings.bind_host,
        port=settings.serving_port,
        access_log=settings.serving_access_log,
        log_level="info",
        timeout_graceful_shutdown=10,
        server_header=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
