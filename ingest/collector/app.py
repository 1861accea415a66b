"""The collector's HTTP API (an ASGI app; ``lambdalake collector`` serves it with uvicorn).

Routes: ``POST /v1/events`` (native: one event, an array, or ``{"events": [...]}``), the Segment
tracking API (``POST /v1/track|page|screen|identify|batch``), ``GET /healthz``, ``GET /metrics``,
``GET /tracker.js``.

A request is checked in this order, and refused as a whole (nothing written) at the first failure:
write key (401), content type and encoding (415), size (413), JSON (400), shape and event count
(400/413). A Segment route without a key in the header or query also takes a ``writeKey`` field of
the body (where Segment's browser SDK puts it), checked right after parsing, before anything else.
Then every event is accepted or rejected on its own (200 with counts and reasons).
``text/plain`` is accepted as JSON because ``navigator.sendBeacon`` (the browser tracker's last
flush on page hide) and CORS "simple requests" without a preflight can only send that type. A gzip
``Content-Encoding`` (what Segment's SDKs send with ``gzip=True``) is decoded, and the size limit
applies to the decoded body. A stream that still throttles after the bus's retries gives 429, one
that cannot be reached 503, both with ``Retry-After``: the client resends, and events it had
already got through are deduped by ``event_id`` downstream.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.collector import metrics
from ingest.collector.auth import QUERY_PARAMS, WriteKeys, key_from_header
from ingest.collector.buses import collector_bus
from ingest.collector.pipeline import WRITE_KEY_FIELD, Kind, Outcome, Pipeline, RequestError, request_items
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings, env_name, get_settings
from lambdalake.stream import StreamBus, StreamError, StreamThrottled

JSON_TYPES = frozenset({"application/json", "text/plain"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
TRACKER_PATH = Path(__file__).resolve().parents[1] / "tracker" / "tracker.js"
EVENT_ROUTES: dict[str, Kind] = {
    "/v1/events": "native",
    "/v1/track": "track",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/batch": "batch",
}
OTHER_ROUTES = ("/healthz", "/metrics", "/tracker.js")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    # "code" and "message" are the fields Segment's SDKs read from an error body.
    return json_response({"code": code, "message": message}, status, headers)


class MetricsMiddleware:
    """Counts every response by route and status and times it (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = {path: path for path in (*EVENT_ROUTES, *OTHER_ROUTES)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.get(scope["path"], "other")
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.REQUESTS.labels(route, str(status)).inc()
            metrics.LATENCY.labels(route).observe(time.perf_counter() - start)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decoded, refusing more than ``limit`` bytes before reading them all."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in GZIP_ENCODINGS and encoding != "identity":
        raise RequestError(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: use gzip or none")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "bad_content_length", "Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise RequestError(413, "body_too_large", f"body of {declared} bytes; at most {limit} accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"body over {limit} bytes; at most {limit} accepted")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding in GZIP_ENCODINGS:
        body = gunzip(body, limit)
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing one that decodes to more than ``limit`` bytes (a zip bomb)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, "bad_gzip", f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit or decoder.unconsumed_tail:
        raise RequestError(413, "body_too_large", f"body decompresses to over {limit} bytes")
    if not decoder.eof:
        raise RequestError(400, "bad_gzip", "the gzip body is truncated")
    return out


class Collector:
    """Request handling, with the settings, bus and pipeline it was built with."""

    def __init__(self, settings: Settings, bus: StreamBus) -> None:
        self.settings = settings
        self.bus = bus
        self.pipeline = Pipeline(settings, bus)
        self.write_keys = WriteKeys(settings.write_keys)

    @staticmethod
    def request_key(request: Request) -> str | None:
        key = key_from_header(request.headers.get("authorization"))
        if key is None:
            params = request.query_params
            key = next((params[name] for name in QUERY_PARAMS if name in params), None)
        return key

    def authorize(self, key: str | None) -> None:
        if not self.write_keys.allows(key):
            reason = "missing write key" if key is None else "unknown write key"
            raise RequestError(
                401,
                "unauthorized",
                f"{reason}: send 'Authorization: Bearer <write key>' or HTTP Basic with the key as user name",
            )

    def handler(self, path: str, kind: Kind) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                key = self.request_key(request)
                # Segment's browser SDK puts the key in the body: check it once the body is parsed.
                key_in_body = key is None and kind != "native"
                if not key_in_body:
                    self.authorize(key)
                media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
                if media_type not in JSON_TYPES:
                    raise RequestError(
                        415,
                        "unsupported_media_type",
                        f"Content-Type {media_type or '(none)'!r}: send application/json "
                        "(text/plain with a JSON body is accepted for navigator.sendBeacon)",
                    )
                body = await read_body(request, self.settings.collector_max_body_bytes)
                if not body.strip():
                    raise RequestError(400, "empty_body", "the body is empty; send JSON")
                try:
                    document = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise RequestError(400, "malformed_json", f"malformed JSON: {exc}") from exc
                if key_in_body:
                    self.authorize(document.get(WRITE_KEY_FIELD) if isinstance(document, dict) else None)
                items, batch_context = request_items(kind, document, self.settings.collector_max_events)
                outcome = await run_in_threadpool(self.pipeline.ingest, path, kind, items, batch_context)
            except RequestError as exc:
                return error_response(exc.status, exc.code, exc.message)
            except StreamThrottled as exc:
                metrics.STREAM_ERRORS.labels(self.settings.stream_name, "throttled").inc()
                retry_after = str(max(1, math.ceil(exc.retry_after_s)))
                return error_response(
                    429,
                    "stream_throttled",
                    "the stream is throttling writes; nothing from this request can be counted as "
                    "accepted: retry after the delay in Retry-After",
                    {"Retry-After": retry_after},
                )
            except StreamError as exc:
                metrics.STREAM_ERRORS.labels(self.settings.stream_name, "unavailable").inc()
                return error_response(
                    503,
                    "stream_unavailable",
                    f"the stream is unavailable ({exc}); retry after the delay in Retry-After",
                    {"Retry-After": str(self.settings.collector_unavailable_retry_after_s)},
                )
            self.count(outcome)
            return json_response(outcome.body(), headers={"X-Request-Id": outcome.request_id})

        return handle

    @staticmethod
    def count(outcome: Outcome) -> None:
        if outcome.accepted:
            metrics.EVENTS.labels("accepted", "").inc(outcome.accepted)
        classes: dict[str, int] = {}
        for reason in outcome.reasons:
            label = metrics.reason_class(reason)
            classes[label] = classes.get(label, 0) + 1
        for label, n in classes.items():
            metrics.EVENTS.labels("rejected", label).inc(n)

    def check_stream(self) -> tuple[bool, dict[str, Any]]:
        if self.settings.collector_bus == "noop":
            return True, {"status": "ok", "bus": "noop"}
        try:
            shards = self.bus.list_shards(self.settings.stream_name)
            self.bus.list_shards(self.settings.dlq_stream_name)
        except Exception as exc:  # noqa: BLE001 - any failure to list shards means the stream is not usable
            return False, {"status": "unavailable", "stream": self.settings.stream_name, "reason": str(exc)}
        return True, {"status": "ok", "stream": self.settings.stream_name, "shards": len(shards)}

    async def healthz(self, request: Request) -> Response:
        ok, body = await run_in_threadpool(self.check_stream)
        headers = None if ok else {"Retry-After": str(self.settings.collector_unavailable_retry_after_s)}
        return json_response(body, 200 if ok else 503, headers)

    async def metrics(self, request: Request) -> Response:
        data, content_type = await run_in_threadpool(metrics.render)
        return Response(data, media_type=content_type)

    async def tracker(self, request: Request) -> Response:
        try:
            script = TRACKER_PATH.read_bytes()
        except FileNotFoundError:
            return error_response(
                404, "not_found", "the browser tracker is not installed (ingest/tracker/tracker.js missing)"
            )
        return Response(
            script,
            media_type="application/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=300"},
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The collector app; uvicorn calls this factory in each worker (settings from the environment)."""
    settings = settings or get_settings()
    if settings.collector_pii_hash_fields.strip() and not settings.collector_pii_hash_key:
        raise LambdalakeError(
            f"{env_name('collector_pii_hash_fields')} is set but {env_name('collector_pii_hash_key')} "
            "is not: hashing PII needs a secret key"
        )
    collector = Collector(settings, collector_bus(settings))
    app = FastAPI(title="lambdalake collector", docs_url=None, redoc_url=None, openapi_url=None)
    for path, kind in EVENT_ROUTES.items():
        app.add_api_route(path, collector.handler(path, kind), methods=["POST"], name=path)
    app.add_api_route("/healthz", collector.healthz, methods=["GET"])
    app.add_api_route("/metrics", collector.metrics, methods=["GET"])
    app.add_api_route("/tracker.js", collector.tracker, methods=["GET"])
    origins = [o.strip() for o in settings.collector_allowed_origins.split(",") if o.strip()]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
        expose_headers=["Retry-After", "X-Request-Id"],
        max_age=600,
    )
    app.add_middleware(MetricsMiddleware)
    app.state.collector = collector
    return app
