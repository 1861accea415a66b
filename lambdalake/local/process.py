"""Run a `lambdalake <command>` service as a child process configured exactly like a Settings object.

Used by `lambdalake demo`, benchmarks and integration tests for the collector, the speed layer,
delivery and serving. The child gets its whole configuration from ``LAMBDALAKE_*`` variables
built from the Settings (inherited ``LAMBDALAKE_*`` variables are dropped, and it runs in
``settings.home`` so no stray ``.env`` applies).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import psutil

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


GROUP_GRACE_S = 5.0  # what a service left behind gets this long after SIGTERM, then SIGKILL
KILL_WAIT_S = 1.0


class ServiceProcess:
    """``lambdalake <args>`` as a child in its own session; ``stop()`` ends it (and its workers) by pid."""

    group_grace_s = GROUP_GRACE_S

    def __init__(
        self,
        settings: Settings,
        args: Sequence[str],
        name: str | None = None,
        ready: Callable[[], bool] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.args = list(args)
        self.name = name or self.args[0]
        self.ready = ready
        self.log_path = log_path or settings.log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> ServiceProcess:
        """Start, and wait until ``ready()`` is true (if given) or the child exits (an error)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_environment(self.settings))
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.settings.home,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while self.ready is not None and not self.ready():
            if self.proc.poll() is not None:
                raise LambdalakeError(f"{self.name} exited with {self.proc.returncode}: see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise LambdalakeError(
                    f"{self.name} was not ready within {timeout_s:.0f}s: see {self.log_path}"
                )
            time.sleep(0.1)
        return self

    def command(self) -> list[str]:
        """The child's argv: ``lambdalake <args>`` with this interpreter."""
        return [sys.executable, "-c", "from lambdalake.cli import main; main()", *self.args]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (services drain and release what they hold), SIGKILL of its group after the timeout;
        then what the service left running in its session gets the same (``end_group``)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the service and its workers
                self.proc.wait()
        end_group(self.proc.pid, min(self.group_grace_s, timeout_s))
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def end_group(pgid: int, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, to what still runs in process group ``pgid``.

    A service that exits in time can leave workers behind in its session: Airflow's LocalExecutor
    workers ignore SIGTERM and, orphaned, lived on for an hour after `lambdalake airflow` had stopped.
    The group id is the service's pid, which Linux does not hand out again while the group has members.
    """
    if not _group_running(pgid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if _group_ends(pgid, grace_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    _group_ends(pgid, KILL_WAIT_S)  # SIGKILL lands asynchronously


def _group_ends(pgid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _group_running(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs. Zombies do not count: an orphan's zombie waits for
    pid 1 to reap it, which some container inits (this machine's among them) never do."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue  # it ended meanwhile
    return False
