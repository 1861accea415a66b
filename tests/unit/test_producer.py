"""The Python producer against a real HTTP server on 127.0.0.1 that records every request.

The server is a test peer (http.server in a thread) whose answers each test scripts: 200 with
per-event errors, 503 with Retry-After, 400, 413, or a held request to fill the buffer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingest.producer import Producer, batch_body, events_url, iso_ts, retry_after_s
from lambdalake.settings import Settings

WRITE_KEY = "unit-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Reply = tuple[int, dict[str, str], Any]


@dataclass
class Request:
    at: float
    headers: dict[str, str]
    events: list[Any]
    body_bytes: int


@dataclass
class RecordingServer:
    """Answers POSTs with ``reply(index, events)``; the default accepts everything."""

    reply: Callable[[int, list[Any]], Reply] | None = None
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_ids(self) -> list[str]:
        """event_ids of events in requests answered 200 and not listed as errors."""
        with self.lock:
            return [
                e["event_id"] for r in self.requests if r.headers.get("x-status") == "200" for e in r.events
            ]

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events = json.loads(body)
                request = Request(
                    time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, events, len(body)
                )
                with server.lock:
                    index = len(server.requests)
                    server.requests.append(request)
                status, headers, payload = (
                    server.reply(index, events)
                    if server.reply
                    else (200, {}, {"accepted": len(events), "rejected": 0, "errors": []})
                )
                request.headers["x-status"] = str(status)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    peer = RecordingServer()
    peer.endpoint = peer.start()  # type: ignore[attr-defined]
    yield peer
    peer.stop()


def producer(server: RecordingServer, **kwargs: Any) -> Producer:
    options: dict[str, Any] = {
        "settings": Settings(_env_file=None),  # type: ignore[call-arg]
        "flush_interval_s": 30.0,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "timeout_s": 5.0,
    }
    options.update(kwargs)
    return Producer(server.endpoint, WRITE_KEY, **options)  # type: ignore[attr-defined]


def test_batches_by_count_and_delivers_each_event_once(server: RecordingServer) -> None:
    p = producer(server, batch_size=10)
    ids = [p.track("search", {"query": f"q{i}"}, user_id=f"u{i % 3}") for i in range(35)]
    assert p.flush(timeout=10)
    stats = p.close()
    assert [len(r.events) for r in server.requests] == [10, 10, 10, 5]
    assert sorted(server.accepted_ids()) == sorted(ids)
    assert (stats.submitted, stats.accepted, stats.rejected, stats.dropped, stats.pending) == (
        35,
        35,
        0,
        0,
        0,
    )
    first = server.requests[0]
    assert first.headers["authorization"] == f"Bearer {WRITE_KEY}"
    assert first.headers["content-type"] == "application/json"
    event = first.events[0]
    assert event["event_type"] == "search"
    assert event["user_id"] == "u0"
    assert event["ts"].endswith("Z")
    assert event["context"]["library"]["name"] == "lambdalake-python"


def test_batches_by_bytes(server: RecordingServer) -> None:
    p = producer(server, batch_size=500, max_batch_bytes=4096)
    ids = [p.track("note", {"text": "x" * 300}, anonymous_id="a1") for _ in range(40)]
    p.close()
    assert all(r.body_bytes <= 4096 for r in server.requests)
    assert len(server.requests) > 4  # 40 events of ~450 bytes cannot fit in fewer requests
    assert sorted(server.accepted_ids()) == sorted(ids)


def test_flushes_on_interval_without_being_asked(server: RecordingServer) -> None:
    p = producer(server, flush_interval_s=0.2)
    start = time.monotonic()
    p.track("search", {"query": "shoes"}, user_id="u1")
    while not server.requests and time.monotonic() - start < 5:
        time.sleep(0.02)
    assert server.requests, "the interval flush never happened"
    assert 0.15 <= server.requests[0].at - start < 2.0
    p.close()


def test_retries_503_honouring_retry_after_then_delivers_once(server: RecordingServer) -> None:
    server.reply = lambda index, events: (
        (503, {"Retry-After": "1"}, {"detail": "stream throttled"})
        if index == 0
        else (200, {}, {"accepted": len(events), "rejected": 0, "errors": []})
    )
    p = producer(server, backoff_cap_s=5.0)
    ids = [p.track("search", {"query": "q"}, user_id="u1") for _ in range(5)]
    assert p.flush(timeout=10)
    stats = p.close()
    assert len(server.requests) == 2
    assert server.requests[1].at - server.requests[0].at >= 0.95
    assert server.requests[1].events == server.requests[0].events  # the same batch, not a new one
    assert sorted(server.accepted_ids()) == sorted(ids)
    assert (stats.accepted, stats.dropped, stats.retries, stats.requests) == (5, 0, 1, 2)


def test_client_errors_are_rejected_without_retry(server: RecordingServer) -> None:
    server.reply = lambda _i, _e: (400, {}, {"detail": "malformed JSON"})
    rejected: list[tuple[str, list[str]]] = []
    p = producer(server, on_reject=lambda event, reasons: rejected.append((event["event_id"], reasons)))
    ids = [p.track("search", {}, user_id="u1") for _ in range(3)]
    stats = p.close()
    assert len(server.requests) == 1
    assert sorted(i for i, _ in rejected) == sorted(ids)
    assert rejected[0][1] == ["HTTP 400: malformed JSON"]
    assert (stats.accepted, stats.rejected, stats.dropped) == (0, 3, 0)


def test_per_event_rejections_are_reported_by_index(server: RecordingServer) -> None:
    server.reply = lambda _i, events: (
        200,
        {},
        {"accepted": len(events) - 1, "rejected": 1, "errors": [{"index": 1, "reasons": ["ts: bad"]}]},
    )
    rejected: list[tuple[str, list[str]]] = []
    p = producer(server, on_reject=lambda event, reasons: rejected.append((event["event_id"], reasons)))
    ids = [p.track("search", {}, user_id="u1") for _ in range(3)]
    stats = p.close()
    assert rejected == [(ids[1], ["ts: bad"])]
    assert (stats.accepted, stats.rejected) == (2, 1)


def test_gives_up_after_bounded_retries_and_reports_drops() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    dropped: list[str] = []
    p = Producer(
        dead,
        WRITE_KEY,
        settings=Settings(_env_file=None),  # type: ignore[call-arg]
        max_retries=2,
        backoff_base_s=0.01,
        backoff_cap_s=0.02,
        on_drop=lambda _event, reason: dropped.append(reason),
    )
    for _ in range(4):
        p.track("search", {}, user_id="u1")
    assert p.flush(timeout=10)
    stats = p.close()
    assert (stats.accepted, stats.dropped, stats.requests, stats.retries) == (0, 4, 3, 2)
    assert len(dropped) == 4
    assert "ConnectError" in dropped[0]
    assert "after 3 attempts" in dropped[0]


def test_full_buffer_drops_within_the_time_bound(server: RecordingServer) -> None:
    release = threading.Event()

    def held(_index: int, events: list[Any]) -> Reply:
        release.wait(10)
        return 200, {}, {"accepted": len(events), "rejected": 0, "errors": []}

    server.reply = held
    dropped: list[str] = []
    p = producer(
        server,
        max_queue=5,
        batch_size=5,
        enqueue_timeout_s=0.1,
        on_drop=lambda _event, reason: dropped.append(reason),
    )
    kept = [p.track("search", {}, user_id="u1") for _ in range(5)]
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests, "the first batch was never posted"
    start = time.monotonic()
    for _ in range(3):
        p.track("search", {}, user_id="u1")
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.5  # three waits of 0.1 s each (plus scheduling slack), no more
    assert dropped == ["buffer full"] * 3
    release.set()
    stats = p.close()
    assert sorted(server.accepted_ids()) == sorted(kept)
    assert (stats.submitted, stats.accepted, stats.dropped, stats.pending) == (8, 5, 3, 0)


def test_close_flushes_and_later_sends_are_dropped(server: RecordingServer) -> None:
    dropped: list[str] = []
    p = producer(server, on_drop=lambda _event, reason: dropped.append(reason))
    ids = [p.page("https://shop.example/p/1", title="P1", user_id="u1") for _ in range(7)]
    identify_id = p.identify("u1", {"plan": "pro"}, anonymous_id="a1")
    p.close()
    assert sorted(server.accepted_ids()) == sorted([*ids, identify_id])
    events = server.requests[0].events
    assert events[0]["event_type"] == "page_view"
    assert events[0]["properties"] == {"url": "https://shop.example/p/1", "title": "P1"}
    assert events[-1]["properties"] == {"traits": {"plan": "pro"}}
    p.track("search", {}, user_id="u1")
    assert dropped == ["producer is closed"]
    assert p.stats().dropped == 1


def test_splits_batches_the_collector_finds_too_large(server: RecordingServer) -> None:
    server.reply = lambda _i, events: (
        (413, {}, {"detail": "too many events"})
        if len(events) > 4
        else (200, {}, {"accepted": len(events), "rejected": 0, "errors": []})
    )
    p = producer(server, batch_size=20)
    ids = [p.track("search", {}, user_id="u1") for _ in range(20)]
    stats = p.close()
    assert sorted(server.accepted_ids()) == sorted(ids)
    assert (stats.accepted, stats.rejected, stats.dropped) == (20, 0, 0)


def test_many_threads_lose_and_duplicate_nothing(server: RecordingServer) -> None:
    p = producer(server, batch_size=100, flush_interval_s=0.05)
    ids: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = [p.track("search", {"n": i}, user_id=f"t{n}") for i in range(400)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = p.close()
    received = server.accepted_ids()
    assert len(received) == len(set(received)) == 3200
    assert set(received) == set(ids)
    assert (stats.submitted, stats.accepted, stats.dropped, stats.pending) == (3200, 3200, 0, 0)


def test_flushes_at_interpreter_exit(server: RecordingServer, tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from lambdalake.client import Producer
            p = Producer({server.endpoint!r}, {WRITE_KEY!r}, flush_interval_s=60)
            for i in range(12):
                p.track("search", {{"n": i}}, user_id="u-exit")
            """  # type: ignore[attr-defined]
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, cwd=Path.cwd()
    )
    assert result.returncode == 0, result.stderr
    assert len(server.accepted_ids()) == 12


def test_rejects_what_no_retry_can_fix(server: RecordingServer) -> None:
    p = producer(server)
    with pytest.raises(ValueError, match="user_id or an anonymous_id"):
        p.track("search", {})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        p.track("search", {"bad": object()}, user_id="u1")
    with pytest.raises(ValueError, match="bytes; a request holds at most"):
        p.track("search", {"blob": "x" * 2_000_000}, user_id="u1")
    with pytest.raises(ValueError, match="event_type"):
        p.track("", {}, user_id="u1")
    assert p.close().submitted == 0


def test_helpers() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s("garbage") is None
    assert retry_after_s(None) is None
    now = datetime.now(UTC)
    http_date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert 28 <= (retry_after_s(http_date, now=now.timestamp()) or 0) <= 31
    assert events_url("http://h:1/") == "http://h:1/v1/events"
    assert events_url("http://h:1/v1/events") == "http://h:1/v1/events"
    assert iso_ts(datetime(2026, 1, 2, 3, 4, 5, 678_000)) == "2026-01-02T03:04:05.678Z"
    assert batch_body([b"1", b"2"]) == b"[1,2]"
