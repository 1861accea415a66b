"""Run ``lambdalake serve`` as a child process: for `lambdalake demo`, benchmarks and tests."""

from __future__ import annotations

from pathlib import Path

import httpx

from lambdalake.local.process import ServiceProcess
from lambdalake.settings import Settings


class ServingProcess(ServiceProcess):
    """The serving API on 127.0.0.1:``settings.serving_port``, ready once /healthz answers."""

    def __init__(self, settings: Settings, log_path: Path | None = None) -> None:
        super().__init__(
            settings,
            ["serve"],
            name="serve",
            ready=self._healthy,
            log_path=log_path or settings.log_dir / f"serve-{settings.serving_port}.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.serving_port}"

    def dashboard_url(self) -> str:
        """The dashboard with the first read key in its URL (the page keeps it in localStorage)."""
        key = self.settings.read_keys[0] if self.settings.read_keys else ""
        return f"{self.url}/?key={key}"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout_s: float = 30.0) -> ServingProcess:
        super().start(timeout_s)
        return self
