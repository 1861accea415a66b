"""The serving HTTP API (``lambdalake serve``): reconciled metrics, speed-only answers, drift, status.

The contract shared with the dashboard is docs/serving.md. Every ``/v1/*`` route needs a read key
(``Authorization: Bearer <key>`` or ``X-Read-Key``; setting ``read_keys``); ``/healthz``,
``/metrics``, ``/docs`` and the dashboard do not. Endpoints are plain ``def``: FastAPI runs them in
its thread pool, so a slow engine call holds one worker thread, never the event loop, and the
engines' timeouts and breakers (serving/engines.py) bound how long it holds it.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdalake.settings import Settings, get_settings
from serving.drift import DriftReport, latest_by_metric
from serving.engines import EngineUnavailable
from serving.metrics import ServingMetrics
from serving.queries import SpeedAnswers
from serving.reconcile import Degraded, QueryError, Reconciler, UnknownMetric
from serving.retention import expire_published
from serving.times import HOUR_S, iso, parse_time

log = logging.getLogger(__name__)
DEFAULT_RANGE_S = 86400


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class Serving:
    """Everything one serving process holds: engines, reconciler, answers, drift, metrics."""

    def __init__(self, settings: Settings, reconciler: Reconciler | None = None) -> None:
        self.settings = settings
        self.reconciler = reconciler or Reconciler(settings)
        self.answers = SpeedAnswers(self.reconciler)
        self.drift = DriftReport(self.reconciler)
        self.metrics = ServingMetrics()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- periodic work: retention expiry and the drift report ------------------------------------
    def expire(self) -> int:
        r = self.reconciler
        result = r.redis.run(lambda client: expire_published(self.settings, client, r.batch, r.catalogue))
        self.metrics.expired_keys.inc(result.keys_expired)
        return result.keys_expired

    def update_drift(self, start: int | None = None, end: int | None = None) -> None:
        """The drift gauges over [start, end), by default the lookback up to now."""
        end = end if end is not None else int(time.time()) // HOUR_S * HOUR_S + HOUR_S
        start = start if start is not None else end - self.settings.serving_drift_lookback_hours * HOUR_S
        rows = self.drift.rows(start, end)
        over: dict[str, int] = {}
        for row in rows:
            over[row.metric] = over.get(row.metric, 0) + int(row.over_threshold)
        for metric, count in over.items():
            self.metrics.drift_over.labels(metric).set(count)
        for metric, row in latest_by_metric(rows).items():
            self.metrics.drift_absolute.labels(metric).set(row.abs_diff or 0.0)
            # batch saw nothing and speed something: infinitely far apart, relatively
            self.metrics.drift_relative.labels(metric).set(math.inf if row.rel_diff is None else row.rel_diff)

    def maintain(self) -> None:
        """One run of the periodic tasks; a failure of one is counted and logged, never raised."""
        for name, task in (("retention", self.expire), ("drift", self.update_drift)):
            try:
                task()
            except EngineUnavailable as exc:
                self.metrics.maintenance_errors.labels(name).inc()
                log.warning("%s skipped: %s", name, exc)
            except Exception:  # a periodic task must not kill the thread; the traceback is logged
                self.metrics.maintenance_errors.labels(name).inc()
                log.exception("%s failed", name)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="serving-maintenance", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.settings.serving_maintenance_interval_s
        if self._stop.wait(min(interval, 5.0)):
            return
        while not self._stop.is_set():
            self.maintain()
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.reconciler.close()

    # --- /metrics -------------------------------------------------------------------------------
    def render_metrics(self) -> tuple[bytes, str]:
        r = self.reconciler
        for engine in (r.redis, r.warehouse):
            self.metrics.engine_up.labels(engine.name).set(0 if engine.breaker.error else 1)
        boundary = r.boundary()
        self.metrics.watermark.set(boundary.watermark or 0)
        return self.metrics.render()


class MetricsMiddleware:
    """Counts and times every request by route template (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _time_range(start: str | None, end: str | None, default_s: int = DEFAULT_RANGE_S) -> tuple[int, int]:
    try:
        end_s = parse_time(end) if end else int(time.time())
        start_s = parse_time(start) if start else end_s - default_s
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    if start_s >= end_s:
        raise QueryError(f"start ({iso(start_s)}) must be before end ({iso(end_s)})")
    return start_s, end_s


def create_app(settings: Settings | None = None, reconciler: Reconciler | None = None) -> FastAPI:
    """The serving app; the maintenance thread runs while the app's lifespan does (uvicorn)."""
    settings = settings or get_settings()
    serving = Serving(settings, reconciler)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        serving.start()
        try:
            yield
        finally:
            serving.stop()

    app = FastAPI(
        title="lambdalake serving API",
        version="1",
        description="Catalogue metrics reconciled from the batch view (warehouse, hours up to the batch "
        "watermark) and the speed view (Redis, later hours); trending, users, alerts, drift. "
        "Every /v1 route needs a read key: `Authorization: Bearer <key>` or `X-Read-Key: <key>`.",
        lifespan=lifespan,
    )
    app.state.serving = serving
    app.add_middleware(MetricsMiddleware, metrics=serving.metrics)

    read_keys = [k.encode() for k in settings.read_keys]
    header_key = APIKeyHeader(name="X-Read-Key", auto_error=False, description="A read key.")
    bearer = HTTPBearer(auto_error=False, description="A read key as a bearer token.")

    def require_key(
        x_read_key: str | None = Security(header_key),
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> None:
        key = x_read_key or (credentials.credentials if credentials else None)
        if not key:
            raise HTTPException(401, "missing read key: send `Authorization: Bearer <key>` or `X-Read-Key`")
        if not any(hmac.compare_digest(key.encode(), k) for k in read_keys):
            raise HTTPException(401, "unknown read key")

    @app.exception_handler(QueryError)
    async def _query_error(_request: Request, exc: QueryError) -> Response:
        return json_response({"detail": str(exc)}, 422)

    @app.exception_handler(UnknownMetric)
    async def _unknown_metric(_request: Request, exc: UnknownMetric) -> Response:
        return json_response({"detail": str(exc)}, 404)

    @app.exception_handler(EngineUnavailable)
    async def _engine(_request: Request, exc: EngineUnavailable) -> Response:
        return json_response({"detail": str(exc)}, 503)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        data, content_type = serving.render_metrics()
        return Response(data, media_type=content_type)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
    r = serving.reconciler
    answers = serving.answers

    @v1.get("/metrics/{name}", summary="A catalogue metric over time, batch and speed reconciled")
    def metric_series(
        name: str,
        start: str | None = Query(None, description="ISO-8601 start (default: end - 24 h)."),
        end: str | None = Query(None, description="ISO-8601 end, exclusive (default: now)."),
        granularity: Literal["minute", "hour", "day"] = Query("hour"),
        key: list[str] = Query(default=[], description="One value per `by` component of the metric."),
    ) -> Response:
        r.metric(name)
        start_s, end_s = _time_range(start, end)
        return json_response(r.series(name, start_s, end_s, granularity, key).to_json())

    @v1.get("/metrics/{name}/windows", summary="A key's stagger windows (opened by the key's first event)")
    def stagger_windows(
        name: str,
        start: str | None = Query(None, description="ISO-8601 start (default: end - 24 h)."),
        end: str | None = Query(None, description="ISO-8601 end, exclusive (default: now)."),
        key: list[str] = Query(default=[], description="One value per `by` component of the metric."),
    ) -> Response:
        start_s, end_s = _time_range(start, end)
        return json_response(r.stagger(name, key, start_s, end_s))

    @v1.get("/catalogue", summary="The metrics this API answers, with their windows and keys")
    def catalogue() -> Response:
        return json_response(
            {
                "metrics": [
                    {
                        "name": m.name,
                        "description": m.description,
                        "aggregate": m.aggregate,
                        "formula": m.formula,
                        "windows": m.windows,
                        "sliding": m.sliding,
                        "by": m.by,
                    }
                    for m in r.catalogue
                ]
            }
        )

    @v1.get("/trending", summary="Top products over a sliding window, from the speed layer")
    def trending(
        window: str = Query("15m", description="One of the metric's sliding spans."),
        category: str | None = Query(None),
        by: Literal["views", "purchases"] = Query("views"),
        k: int = Query(10, ge=1, le=100),
    ) -> Response:
        return json_response(answers.trending(window, category, by, k))

    @v1.get("/users/{user_id}/recent", summary="A user's recently viewed products, newest first")
    def recent(user_id: str, n: int = Query(10, ge=1, le=100)) -> Response:
        return json_response(answers.recent(user_id, n))

    @v1.get("/users/{user_id}/profile", summary="A user's lifetime figures")
    def profile(user_id: str) -> Response:
        body = answers.profile(user_id)
        if body is None:
            raise HTTPException(404, f"no data for user {user_id!r}")
        return json_response(body)

    @v1.get("/users/{user_id}/recommendations", summary="Products co-viewed with the user's recent ones")
    def recommendations(user_id: str, k: int = Query(10, ge=1, le=100)) -> Response:
        return json_response(answers.recommendations(user_id, k))

    @v1.get("/active-users", summary="Distinct active users over the sliding spans (HyperLogLog)")
    def active_users() -> Response:
        return json_response(answers.active_users())

    @v1.get("/funnel", summary="Funnel step counts over a range, batch and speed reconciled")
    def funnel(start: str | None = Query(None), end: str | None = Query(None)) -> Response:
        start_s, end_s = _time_range(start, end)
        return json_response(r.funnel(start_s, end_s))

    @v1.get("/alerts", summary="High-value purchase and fraud alerts, newest first")
    def alerts(
        since: str | None = Query(None, description="Only alerts raised at or after this ISO time."),
        limit: int = Query(50, ge=1, le=1000),
    ) -> Response:
        try:
            since_s = parse_time(since) if since else None
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        return json_response(answers.alerts(since_s, limit))

    @v1.get("/drift", summary="Speed vs batch values of every published hour in the range")
    def drift(
        start: str | None = Query(None, description="Default: end - serving_drift_lookback_hours."),
        end: str | None = Query(None, description="Default: now."),
        metric: list[str] = Query(
            default=[], description="Metrics to compare (default: every eligible one)."
        ),
    ) -> Response:
        start_s, end_s = _time_range(start, end, settings.serving_drift_lookback_hours * HOUR_S)
        degraded = Degraded()
        rows = serving.drift.rows(start_s, end_s, metric or None, degraded)
        return json_response(
            {
                "threshold": settings.serving_drift_threshold,
                "rows": [row.to_json() for row in rows],
                "degraded": list(degraded),
            }
        )

    @v1.get("/status", summary="Engines, batch watermark and time")
    def status() -> Response:
        redis_ok, redis_error = r.redis.ping()
        warehouse_ok, warehouse_error = r.warehouse.ping()
        boundary = r.boundary() if warehouse_ok else None
        watermark = boundary.watermark if boundary is not None else None
        return json_response(
            {
                "redis": {"ok": redis_ok, "error": redis_error},
                "warehouse": {"ok": warehouse_ok, "error": warehouse_error},
                "watermark": None if watermark is None else iso(watermark),
                "now": iso(time.time()),
            }
        )

    app.include_router(v1)

    from serving.dashboard import mount_dashboard

    mount_dashboard(app, settings)
    return app
