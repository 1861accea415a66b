"""The live dashboard served at ``/`` by the serving process (owned by the dashboard work)."""

from __future__ import annotations

from typing import Any


def mount_dashboard(app: Any, settings: Any) -> None:
    """Mount the dashboard's page and static files on the FastAPI ``app`` (placeholder until it lands)."""
