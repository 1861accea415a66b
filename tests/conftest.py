"""Shared fixtures. Integration tests get their own engines on free ports and their own data
directory, so they never touch (or clash with) a `make demo` running on the same machine."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdalake.settings import Settings


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop root-logger handlers writing to a stream pytest is about to close.

    Importing Airflow adds a root handler on the ``sys.stdout`` of that moment, which under pytest
    is its capture. py4j logs once more while Python exits (a Spark connection's ``__del__``), and
    that printed a "Logging error" traceback under the test summary."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream not in (sys.__stdout__, sys.__stderr__):
            root.removeHandler(handler)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a test: local profile, its own home, free ports; overrides win."""
    values: dict[str, object] = {
        "profile": "local",
        "home": home,
        "kinesis_port": free_port(),
        "redis_port": free_port(),
        "warehouse_port": free_port(),
        "collector_port": free_port(),
        "serving_port": free_port(),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def engines_home() -> Path:
    # PostgreSQL runs unprivileged when we are root, so its home must be world-traversable.
    home = Path(tempfile.mkdtemp(prefix="lambdalake-test-"))
    home.chmod(0o755)
    return home


@pytest.fixture(scope="session")
def engines(engines_home: Path) -> Iterator[Settings]:
    """Real local engines (kinesalite, redis-server, PostgreSQL) for the whole test session."""
    from lambdalake.local.services import LocalEngines

    settings = make_settings(engines_home)
    local = LocalEngines(settings)
    try:
        local.up(progress=lambda _msg: None)
        yield settings
    finally:
        local.down(progress=lambda _msg: None)
        if not os.environ.get("LAMBDALAKE_KEEP_TEST_DATA"):
            import shutil

            shutil.rmtree(engines_home, ignore_errors=True)
