"""Run ``lambdalake collector`` as a child process: for benchmarks, integration tests and demos.

The child gets its whole configuration from ``LAMBDALAKE_*`` variables built from a Settings
object (inherited ``LAMBDALAKE_*`` variables are dropped, and it runs in ``settings.home`` so no
stray ``.env`` applies), so it is configured exactly like the caller's Settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from lambdalake.errors import LambdalakeError
from lambdalake.settings import ENV_PREFIX, Settings, env_name


def settings_environment(settings: Settings) -> dict[str, str]:
    """``LAMBDALAKE_*`` variables that reproduce ``settings`` in another process."""
    env: dict[str, str] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(map(str, value))
        elif isinstance(value, dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[field.alias or env_name(name)] = text
    return env


class CollectorProcess:
    """A collector child process on 127.0.0.1:``settings.collector_port``; stop() ends it by its pid."""

    def __init__(self, settings: Settings, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path or settings.log_dir / f"collector-{settings.collector_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.collector_port}"

    def start(self, timeout_s: float = 30.0, require_healthy: bool = True) -> CollectorProcess:
        """Start and wait until /healthz answers (200, or any answer if not ``require_healthy``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_environment(self.settings))
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from lambdalake.cli import main; main()", "collector"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.settings.home,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise LambdalakeError(f"the collector exited with {code}: see {self.log_path}")
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=5.0)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if response.status_code == 200 or not require_healthy:
                return self
            time.sleep(0.2)
        self.stop()
        raise LambdalakeError(f"the collector was not healthy within {timeout_s:.0f}s: see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (uvicorn drains in-flight requests), SIGKILL after the timeout; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                # Its own session (start_new_session): the group is the collector and its workers.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> CollectorProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
