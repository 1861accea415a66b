"""Python producer SDK: send events to the lambdalake collector from a server process.

Like Segment's analytics-python, but for the native API (``POST /v1/events``): calls return at
once, events wait in a bounded buffer and a background thread posts them in batches (by count,
bytes and time), retrying 429/503/5xx and network errors with exponential backoff and jitter
(honouring ``Retry-After``). Nothing is lost silently: every event ends up counted exactly once
as accepted, rejected (the collector said why; ``on_reject``) or dropped (buffer full for longer
than ``enqueue_timeout_s``, retries exhausted, or closed with events undelivered; ``on_drop``).

Delivery is at-least-once: a request that timed out may have been written before it is retried,
so the stream can hold an event twice; ``event_id`` (set here, once per event) is the dedupe key
every layer uses.
"""

from __future__ import annotations

import atexit
import email.utils
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from lambdalake.settings import Settings, get_settings
from lambdalake.stream.kinesis import backoff_delay

logger = logging.getLogger("lambdalake.producer")

EVENTS_PATH = "/v1/events"
LIBRARY = {"name": "lambdalake-python", "version": "0.1.0"}
_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

DropCallback = Callable[[Mapping[str, Any], str], None]
RejectCallback = Callable[[Mapping[str, Any], list[str]], None]


def default_endpoint(settings: Settings) -> str:
    """The collector's base URL: ``sdk_endpoint`` if set, else the local collector's port."""
    return (settings.sdk_endpoint or f"http://127.0.0.1:{settings.collector_port}").rstrip("/")


def events_url(endpoint: str) -> str:
    """``endpoint`` may be the collector's base URL or already its events URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(EVENTS_PATH) else endpoint + EVENTS_PATH


def iso_ts(value: datetime | str | None = None) -> str:
    """RFC 3339 UTC with milliseconds, as the contract wants; naive datetimes are taken as UTC."""
    if isinstance(value, str):
        return value
    value = value or datetime.now(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The event as compact JSON, or a ValueError naming what cannot be encoded."""
    try:
        return orjson.dumps(event, option=_JSON_OPTIONS)
    except TypeError as exc:
        raise ValueError(f"event is not JSON-serialisable: {exc}") from exc


def batch_body(parts: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"


def body_size(part_sizes: int, count: int) -> int:
    """Bytes of the JSON array holding ``count`` encoded events of ``part_sizes`` bytes in all."""
    return part_sizes + max(count - 1, 0) + 2


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --- one request with retries (shared with `lambdalake send`) ----------------------------------
@dataclass
class BatchOutcome:
    """What became of one batch: accepted count, rejected indexes with reasons, or undelivered."""

    size: int
    accepted: int = 0
    rejected: dict[int, list[str]] = field(default_factory=dict)
    undelivered: list[int] = field(default_factory=list)  # indexes given up on after transient failures
    failure: str | None = None  # why they were given up on
    attempts: int = 0
    retries: int = 0

    def merge(self, other: BatchOutcome, offset: int) -> None:
        self.accepted += other.accepted
        self.rejected.update({offset + i: reasons for i, reasons in other.rejected.items()})
        self.undelivered.extend(offset + i for i in other.undelivered)
        self.failure = other.failure or self.failure
        self.attempts += other.attempts
        self.retries += other.retries


class Delivery:
    """Posts batches to the collector: retries transient failures, classifies the rest.

    One instance per thread (it owns one HTTP connection pool). ``stop`` aborts backoff waits, so a
    closing producer is never held up by a sleeping retry.
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str,
        *,
        max_retries: int,
        backoff_base_s: float,
        backoff_cap_s: float,
        timeout_s: float,
        stop: threading.Event | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.url = events_url(endpoint)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.stop = stop or threading.Event()
        self.rng = rng
        self.client = httpx.Client(
            timeout=timeout_s,
            headers={
                "Authorization": f"Bearer {write_key}",
                "Content-Type": "application/json",
                "User-Agent": f"{LIBRARY['name']}/{LIBRARY['version']}",
            },
        )

    def close(self) -> None:
        self.client.close()

    def _delay(self, attempt: int, server_hint: float | None) -> float:
        jittered = (
            backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, self.rng)
            if self.rng
            else backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)
        )
        if server_hint is None:
            return jittered
        return min(max(server_hint, jittered), self.backoff_cap_s)

    def deliver(self, parts: Sequence[bytes]) -> BatchOutcome:
        """Post ``parts`` (encoded events) as one JSON array, splitting it if the collector says 413."""
        outcome = BatchOutcome(size=len(parts))
        body = batch_body(parts)
        for attempt in range(self.max_retries + 1):
            outcome.attempts += 1
            hint: float | None = None
            try:
                response = self.client.post(self.url, content=body)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status == 200:
                    return self._accepted(outcome, response)
                if status == 413 and len(parts) > 1:
                    return self._split(outcome, parts)
                if status not in _RETRYABLE_STATUS:
                    reason = f"HTTP {status}: {_detail(response)}"
                    outcome.rejected = {i: [reason] for i in range(len(parts))}
                    return outcome
                failure = f"HTTP {status}: {_detail(response)}"
                hint = retry_after_s(response.headers.get("Retry-After"))
            if attempt == self.max_retries or self.stop.is_set():
                return self._give_up(outcome, f"{failure} (after {outcome.attempts} attempts)")
            logger.debug("retrying batch of %d after %s", len(parts), failure)
            outcome.retries += 1
            if self.stop.wait(self._delay(attempt, hint)):
                return self._give_up(outcome, f"{failure} (stopped before retrying)")
        raise AssertionError("unreachable")  # pragma: no cover

    def _give_up(self, outcome: BatchOutcome, failure: str) -> BatchOutcome:
        outcome.undelivered = list(range(outcome.size))
        outcome.failure = failure
        return outcome

    def _accepted(self, outcome: BatchOutcome, response: httpx.Response) -> BatchOutcome:
        try:
            payload = response.json()
            errors = payload.get("errors") or []
            for error in errors:
                index = int(error["index"])
                if 0 <= index < outcome.size:
                    outcome.rejected[index] = [str(r) for r in error.get("reasons") or ["rejected"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("collector answered 200 with an unreadable body; counting the batch accepted")
        outcome.accepted = outcome.size - len(outcome.rejected)
        return outcome

    def _split(self, outcome: BatchOutcome, parts: Sequence[bytes]) -> BatchOutcome:
        # The collector's configured limit is lower than ours: halve until it fits.
        middle = len(parts) // 2
        for offset, half in ((0, parts[:middle]), (middle, parts[middle:])):
            outcome.merge(self.deliver(half), offset)
        return outcome


def _detail(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(payload, dict):
        return str(payload.get("detail") or payload.get("error") or payload)[:200]
    return str(payload)[:200]


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


# --- the producer --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProducerStats:
    """Counts since start. ``submitted == accepted + rejected + dropped + pending`` at all times."""

    submitted: int
    accepted: int
    rejected: int
    dropped: int
    pending: int
    requests: int
    retries: int


@dataclass(slots=True)
class _Queued:
    event: dict[str, Any]
    data: bytes


class Producer:
    """Buffers events and posts them to the collector from a background thread.

    ``send`` (and ``track``/``page``/``identify``) never block longer than ``enqueue_timeout_s``;
    ``flush`` waits until everything buffered is delivered or given up; ``close`` flushes and stops
    the thread and also runs at interpreter exit (bounded by ``exit_timeout_s``).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        write_key: str | None = None,
        *,
        settings: Settings | None = None,
        max_queue: int | None = None,
        batch_size: int | None = None,
        max_batch_bytes: int | None = None,
        flush_interval_s: float | None = None,
        enqueue_timeout_s: float | None = None,
        max_retries: int | None = None,
        backoff_base_s: float | None = None,
        backoff_cap_s: float | None = None,
        timeout_s: float | None = None,
        exit_timeout_s: float | None = None,
        on_drop: DropCallback | None = None,
        on_reject: RejectCallback | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        s = settings or get_settings()
        self.endpoint = events_url(endpoint or default_endpoint(s))
        self.write_key = write_key or (s.write_keys[0] if s.write_keys else "")
        if not self.write_key:
            raise ValueError("no write key: pass write_key= or set LAMBDALAKE_WRITE_KEYS")
        self.max_queue = max_queue or s.producer_max_queue
        # Never more than the collector takes in one request (the same settings configure it).
        self.batch_size = min(batch_size or s.producer_batch_size, s.collector_max_events)
        self.max_batch_bytes = min(max_batch_bytes or s.collector_max_body_bytes, s.collector_max_body_bytes)
        self.flush_interval_s = _pick(flush_interval_s, s.producer_flush_interval_s)
        self.enqueue_timeout_s = _pick(enqueue_timeout_s, s.producer_enqueue_timeout_s)
        self.exit_timeout_s = _pick(exit_timeout_s, s.producer_exit_timeout_s)
        self.on_drop = on_drop
        self.on_reject = on_reject
        self.context = {"library": dict(LIBRARY), **(context or {})}

        self._request_timeout_s = _pick(timeout_s, s.producer_request_timeout_s)
        self._stop = threading.Event()  # set when close() gives up: abandon retries at once
        self._delivery = Delivery(
            self.endpoint,
            self.write_key,
            max_retries=_pick(max_retries, s.producer_max_retries),
            backoff_base_s=_pick(backoff_base_s, s.producer_backoff_base_s),
            backoff_cap_s=_pick(backoff_cap_s, s.producer_backoff_cap_s),
            timeout_s=self._request_timeout_s,
            stop=self._stop,
        )
        self._cond = threading.Condition()
        self._buffer: deque[_Queued] = deque()
        self._oldest_at = 0.0  # monotonic time the oldest buffered event arrived
        self._in_flight = 0
        self._flush_waiters = 0
        self._closing = False
        self._closed = False
        self._submitted = self._accepted = self._rejected = self._dropped = 0
        self._requests = self._retries = 0
        self._last_drop_log = 0.0
        self._thread = threading.Thread(target=self._run, name="lambdalake-producer", daemon=True)
        self._thread.start()
        atexit.register(self._atexit)

    # --- public API ------------------------------------------------------------------------
    def track(
        self,
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        session_id: str | None = None,
        ts: datetime | str | None = None,
        context: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue an event of ``event_type``; returns its event_id."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("event_type must be a non-empty string")
        event: dict[str, Any] = {"event_type": event_type, "properties": dict(properties or {})}
        for key, value in (
            ("event_id", event_id),
            ("user_id", user_id),
            ("anonymous_id", anonymous_id),
            ("session_id", session_id),
            ("ts", ts),
        ):
            if value is not None:
                event[key] = value
        if context:
            event["context"] = dict(context)
        return self.send(event)

    def page(
        self,
        url: str,
        *,
        title: str | None = None,
        referrer: str | None = None,
        path: str | None = None,
        properties: Mapping[str, Any] | None = None,
        **identity: Any,
    ) -> str:
        """Queue a ``page_view`` of ``url``; identity keywords as for :meth:`track`."""
        props: dict[str, Any] = {"url": url, **(properties or {})}
        for key, value in (("title", title), ("referrer", referrer), ("path", path)):
            if value is not None:
                props[key] = value
        return self.track("page_view", props, **identity)

    def identify(self, user_id: str, traits: Mapping[str, Any] | None = None, **identity: Any) -> str:
        """Queue an ``identify`` event linking ``user_id`` (and any anonymous_id) to its traits."""
        return self.track("identify", {"traits": dict(traits or {})}, user_id=user_id, **identity)

    def send(self, event: Mapping[str, Any]) -> str:
        """Queue a native event as is, filling ``event_id`` and ``ts`` when missing; returns the id.

        Raises ValueError for what no retry can fix (not an object, no user_id/anonymous_id, not
        JSON-serialisable, larger than a request may be). A full buffer does not raise: the event
        is dropped after ``enqueue_timeout_s`` and reported to ``on_drop``.
        """
        if not isinstance(event, Mapping):
            raise ValueError(f"event must be a mapping, got {type(event).__name__}")
        out = dict(event)
        out.setdefault("event_id", str(uuid.uuid4()))
        out["event_id"] = str(out["event_id"])
        out["ts"] = iso_ts(out.get("ts"))
        if not out.get("user_id") and not out.get("anonymous_id"):
            raise ValueError("event needs a user_id or an anonymous_id")
        out["context"] = {**self.context, **(out.get("context") or {})}
        data = encode_event(out)
        if body_size(len(data), 1) > self.max_batch_bytes:
            raise ValueError(
                f"event {out['event_id']} is {len(data)} bytes; "
                f"a request holds at most {self.max_batch_bytes}"
            )
        item = _Queued(out, data)
        with self._cond:
            self._submitted += 1
            if self._closing:
                dropped = self._drop_locked([item], "producer is closed")
            elif self._wait_for_room_locked():
                if not self._buffer:
                    self._oldest_at = time.monotonic()
                self._buffer.append(item)
                if len(self._buffer) in (1, self.batch_size):  # start the interval clock, or send now
                    self._cond.notify_all()
                return out["event_id"]
            else:
                dropped = self._drop_locked([item], "buffer full")
        self._run_callbacks(dropped)
        return out["event_id"]

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything buffered now; True when nothing is left pending within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._buffer or self._in_flight:
                    if not self._thread.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining if remaining is not None else 0.5)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = None) -> ProducerStats:
        """Flush (within ``timeout``), stop the thread, and drop (reporting) whatever is left."""
        with self._cond:
            if self._closed:
                return self.stats()
            self._closing = True
            self._cond.notify_all()
        self.flush(timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self._request_timeout_s + 1.0)
        with self._cond:
            left = list(self._buffer)
            self._buffer.clear()
            calls = self._drop_locked(left, "producer closed before delivery") if left else []
            self._closed = True
        self._run_callbacks(calls)
        self._delivery.close()
        atexit.unregister(self._atexit)
        return self.stats()

    def stats(self) -> ProducerStats:
        with self._cond:
            return ProducerStats(
                submitted=self._submitted,
                accepted=self._accepted,
                rejected=self._rejected,
                dropped=self._dropped,
                pending=len(self._buffer) + self._in_flight,
                requests=self._requests,
                retries=self._retries,
            )

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------
    def _atexit(self) -> None:
        stats = self.close(self.exit_timeout_s)
        if stats.dropped:
            logger.warning("producer exited with %d events dropped in all", stats.dropped)

    def _wait_for_room_locked(self) -> bool:
        deadline = time.monotonic() + self.enqueue_timeout_s
        while len(self._buffer) + self._in_flight >= self.max_queue and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._cond.wait(remaining)
        return not self._closing

    def _drop_locked(self, items: Sequence[_Queued], reason: str) -> list[tuple[Any, ...]]:
        """Count ``items`` dropped; returns the ``on_drop`` calls to make once the lock is released."""
        self._dropped += len(items)
        now = time.monotonic()
        if now - self._last_drop_log >= 1.0:  # one line a second at most, with the running total
            self._last_drop_log = now
            logger.warning("dropped %d event(s): %s (%d dropped in all)", len(items), reason, self._dropped)
        return [(self.on_drop, item.event, reason) for item in items]

    def _run_callbacks(self, calls: Sequence[tuple[Any, ...]]) -> None:
        for callback, *args in calls:
            if callback is None:
                continue
            try:
                callback(*args)
            except Exception:
                logger.exception("producer callback %r failed", callback)

    def _take_batch_locked(self) -> list[_Queued]:
        batch: list[_Queued] = []
        size = 0
        while self._buffer and len(batch) < self.batch_size:
            item_size = len(self._buffer[0].data)
            if batch and body_size(size + item_size, len(batch) + 1) > self.max_batch_bytes:
                break
            batch.append(self._buffer.popleft())
            size += item_size
        self._oldest_at = time.monotonic()
        return batch

    def _ready_locked(self) -> bool:
        if not self._buffer:
            return False
        if self._closing or self._flush_waiters or len(self._buffer) >= self.batch_size:
            return True
        return time.monotonic() - self._oldest_at >= self.flush_interval_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready_locked():
                    if self._stop.is_set() or (self._closing and not self._buffer):
                        return
                    wait = None
                    if self._buffer:
                        wait = max(0.0, self.flush_interval_s - (time.monotonic() - self._oldest_at))
                    self._cond.wait(wait)
                if self._stop.is_set():
                    return
                batch = self._take_batch_locked()
                self._in_flight += len(batch)
                self._cond.notify_all()  # room for senders waiting on a full buffer
            try:
                outcome = self._delivery.deliver([item.data for item in batch])
            except Exception:
                logger.exception("producer failed to post a batch of %d", len(batch))
                outcome = BatchOutcome(
                    size=len(batch), undelivered=list(range(len(batch))), failure="internal error (see log)"
                )
            self._settle(batch, outcome)

    def _settle(self, batch: list[_Queued], outcome: BatchOutcome) -> None:
        calls: list[tuple[Any, ...]] = []
        with self._cond:
            self._in_flight -= len(batch)
            self._requests += outcome.attempts
            self._retries += outcome.retries
            self._accepted += outcome.accepted
            self._rejected += len(outcome.rejected)
            calls += [(self.on_reject, batch[i].event, r) for i, r in sorted(outcome.rejected.items())]
            if outcome.undelivered:
                lost = [batch[i] for i in outcome.undelivered]
                calls += self._drop_locked(lost, f"not delivered: {outcome.failure}")
            self._cond.notify_all()
        self._run_callbacks(calls)
