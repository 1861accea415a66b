"""`lambdalake airflow` for real: the UI/API answers on 127.0.0.1 with the project's DAGs, nothing of
it listens anywhere else, the printed login works, and stopping it leaves no process behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from lambdalake.local.process import ServiceProcess
from lambdalake.settings import Settings
from tests.conftest import free_port, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_IDS = {"lambdalake_hourly", "lambdalake_daily", "lambdalake_reference", "lambdalake_maintenance"}


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":  # pgrp, not a zombie
                pids.append(int(entry.name))
    return pids


def _listening(pids: list[int]) -> list[tuple[str, int]]:
    """(hex local address, port) of the LISTEN sockets the processes hold (IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and fields[9] in inodes:
                found.append((address, int(port, 16)))
    return found


def airflow_ready(base: str) -> bool:
    """Local Airflow's API server answers."""
    try:
        return httpx.get(f"{base}/api/v2/version", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def admin_headers(settings: Settings, base: str) -> dict[str, str]:
    """The printed admin login, as the API's bearer token."""
    token = httpx.post(
        f"{base}/auth/token",
        json={"username": settings.airflow_admin_user, "password": settings.airflow_admin_password},
        timeout=30,
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_local_airflow_serves_the_dags_on_loopback_only_and_stops_cleanly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, airflow_port=free_port())
    base = f"http://127.0.0.1:{settings.airflow_port}"
    service = ServiceProcess(settings, ["airflow"], name="airflow", ready=lambda: airflow_ready(base))
    service.start(timeout_s=240)
    assert service.proc is not None
    pgid = service.proc.pid
    try:
        headers = admin_headers(settings, base)
        deadline, dags = time.monotonic() + 120, {}
        while time.monotonic() < deadline and set(dags) != DAG_IDS:  # the DAG processor's first pass
            listed = httpx.get(f"{base}/api/v2/dags", headers=headers, timeout=30).json()["dags"]
            dags = {d["dag_id"]: d for d in listed}
            time.sleep(2)
        assert set(dags) == DAG_IDS
        assert all(d["is_paused"] for d in dags.values())  # nothing runs until the user says so
        errors = httpx.get(f"{base}/api/v2/importErrors", headers=headers, timeout=30).json()
        assert errors["total_entries"] == 0, errors

        listening = _listening(_group(pgid))
        assert (("0100007F", settings.airflow_port)) in listening
        assert all(address == "0100007F" for address, _ in listening), listening
    finally:
        service.stop(timeout_s=60)
    deadline = time.monotonic() + 30
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _group(pgid) == []
