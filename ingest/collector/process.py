"""Run ``lambdalake collector`` as a child process: for benchmarks, integration tests and demos."""

from __future__ import annotations

from pathlib import Path

import httpx

from lambdalake.local.process import ServiceProcess, settings_environment
from lambdalake.settings import Settings

__all__ = ["CollectorProcess", "settings_environment"]


class CollectorProcess(ServiceProcess):
    """A collector child process on 127.0.0.1:``settings.collector_port``, ready once /healthz answers."""

    def __init__(
        self, settings: Settings, log_path: Path | None = None, require_healthy: bool = True
    ) -> None:
        super().__init__(
            settings,
            ["collector"],
            name="collector",
            ready=self._healthy,
            log_path=log_path or settings.log_dir / f"collector-{settings.collector_port}.log",
        )
        self.require_healthy = require_healthy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.collector_port}"

    def _healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/healthz", timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 or not self.require_healthy

    def start(self, timeout_s: float = 30.0, require_healthy: bool | None = None) -> CollectorProcess:  # type: ignore[override]
        """Start and wait until /healthz answers (200, or any answer if not ``require_healthy``)."""
        if require_healthy is not None:
            self.require_healthy = require_healthy
        super().start(timeout_s)
        return self
