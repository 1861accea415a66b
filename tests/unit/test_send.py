"""`lambdalake send`: line encoding, batching within count and byte limits, and the counts it reports
(against a small recording HTTP peer on 127.0.0.1 that rejects non-object items, like the collector)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from ingest.producer import body_size
from ingest.send import Item, Sender, encode_line, plan_batches, read_items
from lambdalake.errors import LambdalakeError


def items(*sizes: int) -> list[Item]:
    """Items whose encoded size is exactly ``size`` bytes each (a JSON string of that length)."""
    return [Item(i + 1, orjson.dumps("x" * (size - 2)), size, True) for i, size in enumerate(sizes)]


def array_bytes(batch: list[Item]) -> int:
    return len(b"[" + b",".join(item.data for item in batch) + b"]")


def test_encode_line_keeps_json_and_wraps_the_rest_as_strings() -> None:
    good = encode_line(1, b'{"event_type": "search", "n": 1}\n')
    assert good is not None
    assert good.valid_json
    assert orjson.loads(good.data) == {"event_type": "search", "n": 1}
    bad = encode_line(2, b'{"event_type": "sea\n')
    assert bad is not None
    assert not bad.valid_json
    assert orjson.loads(bad.data) == '{"event_type": "sea'
    assert encode_line(3, b"   \n") is None
    binary = encode_line(4, b"\xff\xfe not utf-8\n")
    assert binary is not None
    assert orjson.loads(binary.data) == "\ufffd\ufffd not utf-8"


def test_read_items_numbers_lines_and_skips_blank_ones() -> None:
    stream = io.BytesIO(b'{"a":1}\n\nnot json\n[1,2]\n')
    got = list(read_items(stream))
    assert [(i.line, i.valid_json) for i in got] == [(1, True), (3, False), (4, True)]


def test_batches_respect_the_event_count() -> None:
    batches = list(plan_batches(items(*[10] * 25), max_events=10, max_bytes=10_000))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [i.line for b in batches for i in b] == list(range(1, 26))


def test_batches_respect_the_byte_limit_exactly() -> None:
    # Three 100-byte items make a 304-byte array ([, two commas, ]): it fits 304 bytes, not 303.
    assert [len(b) for b in plan_batches(items(100, 100, 100), 500, 304)] == [3]
    assert [len(b) for b in plan_batches(items(100, 100, 100), 500, 303)] == [2, 1]
    batches = list(plan_batches(items(*[300] * 50, 5000, 10), max_events=500, max_bytes=1024))
    for batch in batches:
        assert array_bytes(batch) == body_size(sum(len(i.data) for i in batch), len(batch))
        assert array_bytes(batch) <= 1024 or len(batch) == 1
    assert [len(b) for b in batches][-2:] == [1, 1]  # the oversize item travels alone
    assert sum(len(b) for b in batches) == 52


class Collector:
    """Accepts JSON objects, rejects anything else per index; answers 503 to the first request if asked."""

    def __init__(self, throttle_first: bool = False, status: int = 200) -> None:
        self.throttle_first = throttle_first
        self.status = status
        self.received: list[Any] = []
        self.requests = 0
        self.lock = threading.Lock()

    def reply(self, items: list[Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self.lock:
            self.requests += 1
            if self.throttle_first and self.requests == 1:
                return 503, {"Retry-After": "0"}, {"detail": "throttled"}
            if self.status != 200:
                return self.status, {}, {"detail": "invalid write key"}
            self.received.extend(items)
        errors = [
            {"index": i, "reasons": [f"event: must be a JSON object, got {type(x).__name__}"]}
            for i, x in enumerate(items)
            if not isinstance(x, dict)
        ]
        return 200, {}, {"accepted": len(items) - len(errors), "rejected": len(errors), "errors": errors}


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    peer = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, payload = peer.reply(body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield peer, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def ndjson_bytes(valid: int, invalid: int) -> bytes:
    lines = [orjson.dumps({"event_id": str(i), "n": i}) for i in range(valid)]
    lines += [b'{"truncated' for _ in range(invalid)]
    return b"\n".join(lines) + b"\n"


def ndjson(valid: int, invalid: int) -> list[Item]:
    return list(read_items(io.BytesIO(ndjson_bytes(valid, invalid))))


def test_sender_counts_every_line_once(collector: tuple[Collector, str]) -> None:
    peer, url = collector
    peer.throttle_first = True
    progress: list[int] = []
    sender = Sender(url, "k", batch_size=7, concurrency=3, backoff_base_s=0.01, backoff_cap_s=0.05)
    sender.on_progress = lambda done, _report: progress.append(done)
    report = sender.send(ndjson(95, 5))
    assert (report.lines, report.accepted, report.rejected, report.invalid_json, report.not_sent) == (
        100,
        95,
        5,
        5,
        0,
    )
    assert report.ok
    assert report.retries == 1
    assert report.requests == 15 + 1  # ceil(100 / 7) batches, one of them sent twice
    assert sorted(x["n"] for x in peer.received if isinstance(x, dict)) == list(range(95))
    assert [x for x in peer.received if not isinstance(x, dict)] == ['{"truncated'] * 5
    assert report.reasons == {"event: must be a JSON object, got str": 5}
    assert progress == sorted(progress)
    assert progress[-1] == len(ndjson_bytes(95, 5))  # the bar ends at the file's size


def test_sender_rejects_oversize_lines_locally(collector: tuple[Collector, str]) -> None:
    peer, url = collector
    big = Item(2, orjson.dumps({"blob": "x" * 5000}), 5000, True)
    report = Sender(url, "k", max_bytes=2048).send([*ndjson(1, 0), big])
    assert (report.accepted, report.rejected, report.rejected_locally) == (1, 1, 1)
    assert report.examples[0].startswith("line 2: ")
    assert len(peer.received) == 1


def test_sender_stops_and_reports_when_the_collector_is_gone() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = Sender(f"http://127.0.0.1:{port}", "k", batch_size=10, concurrency=1, max_retries=1)
    sender.backoff_base_s = sender.backoff_cap_s = 0.01
    report = sender.send(ndjson(50, 0))
    assert not report.ok
    assert (report.accepted, report.not_sent) == (0, 50)
    assert report.failure is not None
    assert "ConnectError" in report.failure


def test_sender_refuses_to_go_on_with_a_bad_write_key(collector: tuple[Collector, str]) -> None:
    peer, url = collector
    peer.status = 401
    with pytest.raises(LambdalakeError, match="refused the write key"):
        Sender(url, "wrong", batch_size=5, concurrency=1).send(ndjson(20, 0))
    assert peer.requests <= 2  # stopped at the first refusal (one more may be in flight), not all 4
