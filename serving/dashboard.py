"""The live dashboard served at ``/`` by the serving process.

Plain HTML, CSS and JavaScript (``serving/dashboard/``, no build step) that poll the ``/v1`` API with
the read key given in the page's URL. The chart library (uPlot) comes from the npm registry through
the project's set-up (``package.json``, ``npm ci``) and is served from ``node_modules`` by this
process, never from a CDN. When ``node_modules`` lacks it (set-up not run) its URL answers 404 and
the page still shows every number, saying the charts are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
NODE_MODULES = PROJECT_ROOT / "node_modules"

# /vendor/<name> -> the file inside node_modules; only these are served (no directory listing,
# no path from the request ever reaches the filesystem).
VENDOR_FILES: dict[str, str] = {
    "uplot.js": "uplot/dist/uPlot.iife.min.js",
    "uplot.css": "uplot/dist/uPlot.min.css",
}

# The page and its scripts change with the code: the browser revalidates them on every load.
NO_CACHE = {"Cache-Control": "no-cache"}


def mount_dashboard(app: FastAPI, settings: Any, node_modules: Path = NODE_MODULES) -> None:
    """Mount ``/`` (the page), ``/static/...`` (its files) and ``/vendor/...`` (the npm library)."""
    del settings  # the page reads everything (key, times) in the browser; kept for the call contract

    @app.get("/", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html", headers=NO_CACHE)

    @app.get("/vendor/{name}", include_in_schema=False)
    def dashboard_vendor(name: str) -> FileResponse:
        relative = VENDOR_FILES.get(name)
        if relative is None:
            raise HTTPException(status_code=404, detail=f"unknown vendor file {name!r}")
        path = node_modules / relative
        if not path.is_file():
            raise HTTPException(
                status_code=404,
                detail=f"{relative} is missing from node_modules: run `make setup` (npm ci)",
            )
        return FileResponse(path)

    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="dashboard-static")
