"""`lambdalake up | down | status` on real engines: idempotent, durable, and clear when a port is taken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from lambdalake.local.services import LocalEngines
from lambdalake.settings import Settings
from lambdalake.stream import Record, get_bus
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_engines() -> Iterator[Settings]:
    """Engines of this module only: the tests below stop and kill them."""
    home = Path(tempfile.mkdtemp(prefix="lambdalake-engines-"))
    home.chmod(0o755)
    settings = make_settings(home)
    local = LocalEngines(settings)
    local.up(progress=lambda _m: None)
    yield settings
    local.down(progress=lambda _m: None)
    subprocess.run(["rm", "-rf", str(home)], check=False)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "LAMBDALAKE_HOME": str(settings.home),
            "LAMBDALAKE_KINESIS_PORT": str(settings.kinesis_port),
            "LAMBDALAKE_REDIS_PORT": str(settings.redis_port),
            "LAMBDALAKE_WAREHOUSE_PORT": str(settings.warehouse_port),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "lambdalake", *args], capture_output=True, text=True, env=env, check=False
    )


def write_marks(settings: Settings, mark: str) -> None:
    redis.Redis.from_url(settings.redis_url).set(f"mark:{mark}", mark)
    with psycopg.connect(settings.warehouse_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS marks (mark text PRIMARY KEY)")
        conn.execute("INSERT INTO marks VALUES (%s)", (mark,))
    get_bus(settings).put_records(settings.stream_name, [Record(mark.encode(), mark)])


def read_marks(settings: Settings) -> tuple[set[str], set[str], set[str]]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    in_redis = {client.get(k) for k in client.scan_iter("mark:*")}
    with psycopg.connect(settings.warehouse_dsn) as conn:
        in_pg = {row[0] for row in conn.execute("SELECT mark FROM marks")}
    bus = get_bus(settings)
    in_stream: set[str] = set()
    from lambdalake.stream import TRIM_HORIZON

    for shard in bus.list_shards(settings.stream_name):
        batch = bus.read(
            shard.shard_id, bus.shard_iterator(settings.stream_name, shard.shard_id, TRIM_HORIZON)
        )
        in_stream |= {r.data.decode() for r in batch.records}
    return in_redis, in_pg, in_stream  # type: ignore[return-value]


def test_up_creates_streams_and_database_and_is_idempotent(own_engines: Settings) -> None:
    local = LocalEngines(own_engines)
    before = {row["name"]: row["pid"] for row in local.status()}
    messages: list[str] = []
    local.up(progress=messages.append)
    assert {row["name"]: row["pid"] for row in local.status()} == before
    assert sum("already running" in m for m in messages) == 3

    bus = get_bus(own_engines)
    assert len(bus.list_shards(own_engines.stream_name)) == own_engines.stream_shards == 4
    assert len(bus.list_shards(own_engines.dlq_stream_name)) == 1
    with psycopg.connect(own_engines.warehouse_dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (own_engines.warehouse_db,)


def test_status_json_reports_each_engine(own_engines: Settings) -> None:
    result = cli(own_engines, "status", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["kinesis", "redis", "warehouse"]
    for row in rows:
        assert set(row) == {"name", "url", "pid", "healthy"}
        assert row["healthy"] is True
        assert isinstance(row["pid"], int)
        assert "127.0.0.1" in row["url"]


def test_engines_listen_on_loopback_only(own_engines: Settings) -> None:
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    ports = {own_engines.kinesis_port, own_engines.redis_port, own_engines.warehouse_port}
    for line in listening:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) in ports:  # 0A = LISTEN
            assert address == "0100007F", f"port {int(port, 16)} listens on {address}"


def test_data_survives_down_and_up(own_engines: Settings) -> None:
    write_marks(own_engines, "before-down")
    local = LocalEngines(own_engines)
    local.down(progress=lambda _m: None)
    assert not any(row["healthy"] for row in local.status())
    assert cli(own_engines, "status").returncode == 1
    local.up(progress=lambda _m: None)
    in_redis, in_pg, in_stream = read_marks(own_engines)
    assert "before-down" in in_redis
    assert "before-down" in in_pg
    assert "before-down" in in_stream


@pytest.mark.parametrize("engine", ["kinesis", "redis", "warehouse"])
def test_data_survives_kill_9_of_an_engine(own_engines: Settings, engine: str) -> None:
    mark = f"before-kill-{engine}"
    write_marks(own_engines, mark)
    local = LocalEngines(own_engines)
    pid = {row["name"]: row["pid"] for row in local.status()}[engine]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not any(r["name"] == engine and not r["healthy"] for r in local.status()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    local.up(progress=lambda _m: None)
    assert all(row["healthy"] for row in local.status())
    in_redis, in_pg, in_stream = read_marks(own_engines)
    assert mark in in_redis
    assert mark in in_pg
    assert mark in in_stream


def test_a_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = make_settings(tmp_path, redis_port=port)
        result = cli(settings, "up")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: port {port} for redis is already in use by another process: set LAMBDALAKE_REDIS_PORT to a free port"
    ]
    assert "Traceback" not in result.stderr
    LocalEngines(settings).down(progress=lambda _m: None)  # kinesis may have started before redis failed


def test_kinesalite_survives_a_client_that_dies_mid_request(own_engines: Settings) -> None:
    """A producer killed while sending must not take the stream server down with it."""
    with socket.create_connection(("127.0.0.1", own_engines.kinesis_port)) as client:
        client.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n"
            b'X-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Length: 1000\r\n\r\n{"Lim'
        )
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    time.sleep(0.5)  # an RST, not a FIN: the request is aborted mid-body
    assert all(row["healthy"] for row in LocalEngines(own_engines).status())
    get_bus(own_engines).put_records(own_engines.stream_name, [Record(b"after-abort", "k")])


def test_start_and_wait_starts_an_engine_of_its_own_and_names_the_log_of_one_that_never_answers(
    tmp_path: Path,
) -> None:
    from lambdalake.errors import LambdalakeError
    from lambdalake.local.services import RedisEngine, start_and_wait

    settings = make_settings(tmp_path / "own")
    engine = RedisEngine("redis", "redis_port", settings)
    try:
        start_and_wait(engine)
        assert redis.Redis.from_url(settings.redis_url).ping()
    finally:
        engine.stop()

    silent = make_settings(tmp_path / "silent", redis_server_bin="/bin/true", engine_start_timeout_s=1.0)
    never = RedisEngine("redis", "redis_port", silent)
    fine = RedisEngine("redis", "redis_port", make_settings(tmp_path / "fine"))
    started = time.monotonic()
    with pytest.raises(
        LambdalakeError, match=r"redis did not answer on 127\.0\.0\.1:\d+ within 1s: see .*redis\.log"
    ):
        start_and_wait(fine, never)
    assert time.monotonic() - started < 10
    assert fine.pid() is None  # the engine that did start is stopped again: nothing left behind
    assert not fine.healthy()
