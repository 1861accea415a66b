"""ServiceProcess.stop ends the service and whatever it left of its session, by pid."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lambdalake.local.process import ServiceProcess
from tests.conftest import make_settings

# A service that exits promptly on SIGTERM and leaves a worker that ignores SIGTERM, as Airflow's
# LocalExecutor workers do. The worker sleeps 60 s at most, so a failing run ends by itself.
SERVICE = """
import signal, subprocess, sys, time
worker = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
)
open(sys.argv[1], "w").write(str(worker.pid))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(60)
"""


class _LeavesAWorker(ServiceProcess):
    group_grace_s = 0.5

    def __init__(self, home: Path) -> None:
        self.pid_file = home / "worker.pid"
        super().__init__(make_settings(home), ["leaves-a-worker"], ready=self.pid_file.exists)

    def command(self) -> list[str]:
        return [sys.executable, "-c", SERVICE, str(self.pid_file)]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for pid 1 to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_ends_workers_the_service_left_behind(tmp_path: Path) -> None:
    service = _LeavesAWorker(tmp_path).start(timeout_s=20)
    worker = int(service.pid_file.read_text())
    assert _running(worker)
    started = time.monotonic()
    try:
        assert service.stop(timeout_s=10) == 0  # the service itself exited on SIGTERM, in time
        assert not _running(worker), "the worker that ignores SIGTERM outlived stop()"
        assert time.monotonic() - started < 5  # the group's grace and SIGKILL, not stop's timeout
    finally:
        if _running(worker):
            os.kill(worker, 9)


def test_stop_of_a_service_that_left_nothing_returns_at_once(tmp_path: Path) -> None:
    service = ServiceProcess(make_settings(tmp_path), ["--help"])
    service.start()
    assert service.proc is not None
    service.proc.wait(30)
    started = time.monotonic()
    assert service.stop() == 0
    assert time.monotonic() - started < 1
