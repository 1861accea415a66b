"""The serving layer's two engines, each behind timeouts and a breaker, so one down never hangs a request.

Every call goes through ``run``: an engine error (refused, timed out, statement cancelled) becomes
``EngineUnavailable`` with a one-line reason, and opens the engine's breaker for
``serving_engine_retry_s``: during that time calls fail at once with the same reason, so a down
engine costs one timeout, not one per request. The reconciler turns the exception into a degraded
answer (other source, or ``unavailable`` points), never a 500.

The warehouse is reached through the profile's loader (``warehouse_loader(settings).connect()``:
PostgreSQL locally, Redshift on aws) with the serving connect timeout, ``statement_timeout`` set
on the session and autocommit on (every read is one statement). Idle connections are kept in a
small pool of our own, at most ``serving_warehouse_pool_size`` connections (psycopg_pool is not a
dependency, and redshift-connector has none).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineUnavailable(LambdalakeError):
    """An engine could not answer; ``str()`` is the one-line reason shown in ``degraded``."""

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(f"{engine} unavailable: {reason}")
        self.engine = engine
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    """The first line of an error, short enough for a JSON answer."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class Breaker:
    """Remembers an engine's last failure for ``retry_s``; thread-safe enough (plain assignments)."""

    def __init__(self, engine: str, retry_s: float) -> None:
        self.engine = engine
        self.retry_s = retry_s
        self.error: str | None = None
        self.failed_at = 0.0

    def check(self) -> None:
        if self.error is not None and time.monotonic() - self.failed_at < self.retry_s:
            raise EngineUnavailable(self.engine, self.error)

    def failed(self, exc: BaseException) -> EngineUnavailable:
        self.error, self.failed_at = reason_of(exc), time.monotonic()
        log.warning("%s unavailable: %s", self.engine, self.error)
        return EngineUnavailable(self.engine, self.error)

    def succeeded(self) -> None:
        self.error = None

    def reset(self) -> None:
        self.error, self.failed_at = None, 0.0


class RedisEngine:
    """The speed views' Redis, with the serving timeouts and no retry loop of its own."""

    name = "redis"

    def __init__(self, settings: Settings, client: Any = None) -> None:
        timeout = settings.serving_redis_timeout_s
        self.client = client or redis_lib.Redis.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # one retry on a broken pooled connection (a restarted server), no backoff
            retry=Retry(NoBackoff(), 1),
        )
        self.breaker = Breaker(self.name, settings.serving_engine_retry_s)

    def run(self, call: Callable[[Any], T]) -> T:
        self.breaker.check()
        try:
            result = call(self.client)
        except (redis_lib.RedisError, OSError) as exc:
            raise self.breaker.failed(exc) from exc
        self.breaker.succeeded()
        return result

    def ping(self) -> tuple[bool, str | None]:
        """A real round trip, whatever the breaker says (for /v1/status)."""
        try:
            self.client.ping()
        except (redis_lib.RedisError, OSError) as exc:
            self.breaker.failed(exc)
            return False, f"{self.name} unavailable: {reason_of(exc)}"
        self.breaker.succeeded()
        return True, None

    def close(self) -> None:
        self.client.close()


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        import redshift_connector

        errors += [redshift_connector.Error, redshift_connector.InterfaceError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


class PoolExhausted(Exception):
    """No warehouse connection became free in time (the warehouse is busy, not down)."""


class ConnectionPool:
    """At most ``size`` connections, kept open between uses; one that saw an error is closed."""

    def __init__(self, connect: Callable[[], Any], size: int, wait_s: float) -> None:
        self._connect = connect
        self.size = size
        self.wait_s = wait_s
        self._idle: deque[Any] = deque()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[tuple[Any, bool]]:
        """(connection, whether it was reused from the pool); waits at most ``wait_s`` for one."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise PoolExhausted(f"busy: no connection free within {self.wait_s:.1f} s")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect()
            healthy = False
            try:
                yield conn, reused
                healthy = True
            finally:
                if healthy and not getattr(conn, "closed", False):
                    with self._lock:
                        self._idle.append(conn)
                else:
                    _close_quietly(conn)
        finally:
            self._slots.release()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # a broken connection may fail to close: it is dropped either way
        log.debug("closing a warehouse connection failed", exc_info=True)


class WarehouseEngine:
    """The batch views' warehouse through the profile's loader, pooled, with serving timeouts."""

    name = "warehouse"

    def __init__(self, settings: Settings) -> None:
        from warehouse.query import warehouse_loader

        connect_timeout = max(1, math.ceil(settings.serving_warehouse_connect_timeout_s))
        self.settings = settings
        self.loader = warehouse_loader(
            settings.model_copy(update={"warehouse_connect_timeout_s": float(connect_timeout)})
        )
        self.dialect = self.loader.dialect
        self.statement_timeout_ms = int(settings.serving_warehouse_statement_timeout_s * 1000)
        wait_s = connect_timeout + settings.serving_warehouse_statement_timeout_s
        self.pool = ConnectionPool(self._connect, settings.serving_warehouse_pool_size, wait_s)
        self.breaker = Breaker(self.name, settings.serving_engine_retry_s)
        self.errors = _database_errors()

    def _connect(self) -> Any:
        conn = self.loader.connect()
        try:
            conn.commit()  # keep what connect() set (search_path) and leave its implicit transaction
            conn.autocommit = True
            conn.cursor().execute(f"SET statement_timeout TO {self.statement_timeout_ms}")
        except Exception:
            _close_quietly(conn)
            raise
        return conn

    def run(self, call: Callable[[Any], T]) -> T:
        """``call(cursor)`` on a pooled connection; a stale pooled connection is retried once, fresh."""
        self.breaker.check()
        for attempt in range(2):
            try:
                with self.pool.connection() as (conn, reused):
                    try:
                        result = call(conn.cursor())
                    except self.errors:
                        if reused and attempt == 0 and getattr(conn, "closed", False):
                            raise _StaleConnection from None
                        raise
            except _StaleConnection:
                self.pool.clear()
                continue
            except PoolExhausted as exc:  # busy, not down: the breaker stays closed
                raise EngineUnavailable(self.name, str(exc)) from exc
            except self.errors as exc:
                raise self.breaker.failed(exc) from exc
            self.breaker.succeeded()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> tuple[bool, str | None]:
        try:
            self.breaker.reset()
            self.run(lambda cursor: cursor.execute("SELECT 1"))
        except EngineUnavailable as exc:
            return False, str(exc)
        return True, None

    def close(self) -> None:
        self.pool.clear()


class _StaleConnection(Exception):
    """A pooled connection the server had closed (e.g. it restarted): retry on a new one."""
