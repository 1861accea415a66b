"""Shared fixtures. Integration tests get their own engines on free ports and their own data
directory, so they never touch (or clash with) a `make demo` running on the same machine."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdalake.settings import Settings


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
