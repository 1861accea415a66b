"""kill -9 of a delivery worker process in the middle of a flush, three times, then a restart:
the raw zone holds every valid record put on the stream exactly once, and the manifests of the
closed hours count exactly the rows of their files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ingest.delivery.layout import hour_key, parse_hour_key
from ingest.delivery.manifest import hour_files, read_manifest
from lambdalake.settings import Settings
from tests.integration.test_delivery_support import (
    Put,
    delivery_settings,
    expected_keys,
    generated_lines,
    put_lines,
    raw_keys,
    raw_rows,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("test_delivery_worker.py")
KILLS = 3
WRITE_DELAY_S = 0.03


def start_worker(settings: Settings, marker_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **worker_env(settings), "PYTHONPATH": str(WORKER.parents[2])}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(marker_dir), str(WRITE_DELAY_S)],
            env=env,
            stdout=out,
            stderr=out,
        )


def flushing_for(markers: Path) -> float:
    """How long the oldest flush under way has been running (0 when none is)."""
    ages = []
    for marker in markers.iterdir():
        try:
            ages.append(time.time() - marker.stat().st_mtime)
        except FileNotFoundError:  # that flush just finished
            continue
    return max(ages, default=0.0)


def test_kill_9_during_flush_loses_and_duplicates_nothing(engines: Settings, tmp_path: Path) -> None:
    settings = delivery_settings(engines, tmp_path, shards=4, delivery_buffer_mib=0.02)
    lines = generated_lines(6000, seed=11)
    puts: list[Put] = []
    killed = threading.Event()  # records keep arriving until the last kill, then stop
    producer = threading.Thread(target=put_lines, args=(settings, lines, 50, 0.05, killed, puts))
    producer.start()
    markers = tmp_path / "flushing"
    markers.mkdir()
    log = tmp_path / "worker.log"
    kills_mid_flush = 0
    try:
        for _ in range(KILLS):
            for stale in markers.iterdir():  # left by the previous kill
                stale.unlink()
            worker = start_worker(settings, markers, log)
            try:
                # A flush marked for longer than one slowed write has written a file: kill it now.
                wait_for(lambda: flushing_for(markers) > 2 * WRITE_DELAY_S, 60, "a flush under way", 0.005)
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(10)
                kills_mid_flush += any(markers.iterdir())  # the flush never got to unmark itself
            finally:
                worker.kill()
                worker.wait(10)
        killed.set()
        producer.join(60)
        expected = expected_keys(puts)
        assert len(expected) > 500
        worker = start_worker(settings, markers, log)
        try:
            wait_for(lambda: len(raw_keys(settings)) >= len(expected), 90, "every record after the restarts")
            # The worker's closer writes the manifests once its shards are idle; the last hour
            # (holding the watermark) stays open.
            hours = {hour_key(r["ts"]) for r in raw_rows(settings)}
            wait_for(
                lambda: (
                    sum(bool(read_manifest(settings, parse_hour_key(h))) for h in hours) == len(hours) - 1
                ),
                30,
                "hours to close",
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
    finally:
        killed.set()
        producer.join(60)
    assert kills_mid_flush == KILLS, log.read_text()[-3000:]
    keys = raw_keys(settings)
    assert len(keys) == len(set(keys)), "a row landed twice"
    assert keys == expected

    closed = [h for h in hours if read_manifest(settings, parse_hour_key(h))]
    for key in closed:
        manifest = read_manifest(settings, parse_hour_key(key))
        assert manifest is not None
        files = {f.name.name: f.rows for f in hour_files(settings, parse_hour_key(key))}
        assert {f["name"]: f["rows"] for f in manifest["files"]} == files
        assert manifest["rows"] == sum(files.values())
