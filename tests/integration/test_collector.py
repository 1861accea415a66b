"""The real collector process (`lambdalake collector`) against kinesalite: every status code, what lands
on the stream and in the DLQ, auth, CORS, health, metrics, PII masking."""

from __future__ import annotations

import base64
import gzip
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from ingest.collector.pii import PiiMasker
from ingest.collector.process import CollectorProcess
from lambdalake.settings import Settings
from tests.conftest import free_port
from tests.integration.test_collector_support import (
    AUTH,
    OTHER_KEY,
    WRITE_KEY,
    collector_settings,
    event,
    read_dead_letters,
    read_events,
    read_records,
    running_collector,
)

pytestmark = pytest.mark.integration

PII_KEY = "test-pii-key"


@pytest.fixture(scope="module")
def collector(engines: Settings) -> Iterator[CollectorProcess]:
    settings = collector_settings(engines, collector_allowed_origins="https://shop.example,https://b.example")
    with running_collector(settings) as process:
        yield process


@pytest.fixture
def client(collector: CollectorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=collector.url, timeout=30.0) as http:
        yield http


def post(client: httpx.Client, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(
        path,
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json", **AUTH, **(headers or {})},
    )


def counts(settings: Settings) -> tuple[int, int]:
    return (
        len(read_records(settings, settings.stream_name)),
        len(read_records(settings, settings.dlq_stream_name)),
    )


def test_batch_accepted_events_land_on_the_stream_and_rejected_ones_in_the_dlq(
    collector: CollectorProcess, client: httpx.Client
) -> None:
    settings = collector.settings
    good = [event(user_id=f"user-{i}") for i in range(3)]
    bad = {"event_type": "purchase", "user_id": "u", "ts": "yesterday", "properties": {}, "extra": 1}
    before = {e["event_id"] for e in read_events(settings)}
    response = post(client, "/v1/events", [good[0], bad, good[1], 7, good[2]])
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    assert body["rejected"] == 2
    assert [e["index"] for e in body["errors"]] == [1, 3]
    reasons = body["errors"][0]["reasons"]
    assert any("ts" in r and "date-time" in r for r in reasons)
    assert any("unknown field(s) extra" in r for r in reasons)
    assert body["errors"][1]["reasons"] == ["event: must be a JSON object, got int"]

    written = {e["event_id"]: e for e in read_events(settings) if e["event_id"] not in before}
    assert set(written) == {e["event_id"] for e in good}
    for sent in good:
        got = written[sent["event_id"]]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", got.pop("received_at"))
        assert got == sent
    keys = {r.partition_key for r in read_records(settings, settings.stream_name)}
    assert {e["user_id"] for e in good} <= keys

    letters = [d for d in read_dead_letters(settings) if d["request_id"] == response.headers["x-request-id"]]
    assert [(d["index"], d["payload"]) for d in letters] == [(1, bad), (3, 7)]
    for letter in letters:
        assert letter["source"] == "collector"
        assert letter["route"] == "/v1/events"
        assert letter["reasons"] == body["errors"][[1, 3].index(letter["index"])]["reasons"]
        assert letter["received_at"].endswith("Z")


def test_single_event_and_events_envelope_are_accepted_and_event_id_filled_only_when_missing(
    collector: CollectorProcess, client: httpx.Client
) -> None:
    without_id = event(user_id="no-id-user")
    del without_id["event_id"]
    single = event()
    assert post(client, "/v1/events", single).json() == {"accepted": 1, "rejected": 0, "errors": []}
    envelope = {"events": [without_id, event(event_id=None, user_id="null-id-user")]}
    assert post(client, "/v1/events", envelope).json()["accepted"] == 2
    written = read_events(collector.settings)
    assert single["event_id"] in {e["event_id"] for e in written}
    filled = [e for e in written if e.get("user_id") in ("no-id-user", "null-id-user")]
    assert len(filled) == 2
    assert all(uuid.UUID(e["event_id"]).version == 4 for e in filled)


def test_auth_missing_or_wrong_key_is_401_and_writes_nothing(
    collector: CollectorProcess, client: httpx.Client
) -> None:
    settings = collector.settings
    before = counts(settings)
    body = orjson.dumps([event(), {"bad": True}])
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": f"Token {WRITE_KEY}"},
    ):
        response = client.post(
            "/v1/events", content=body, headers={"Content-Type": "application/json", **headers}
        )
        assert response.status_code == 401, headers
        assert response.json()["code"] == "unauthorized"
    assert client.post("/v1/events?writeKey=nope", content=body).status_code == 401
    assert counts(settings) == before

    basic = {"Authorization": "Basic " + base64.b64encode(f"{OTHER_KEY}:".encode()).decode()}
    assert (
        client.post(
            "/v1/events", content=orjson.dumps(event()), headers={**basic, "Content-Type": "application/json"}
        ).json()["accepted"]
        == 1
    )
    # navigator.sendBeacon: text/plain, key in the query string.
    beacon = client.post(
        f"/v1/events?writeKey={WRITE_KEY}",
        content=orjson.dumps([event()]),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert beacon.json()["accepted"] == 1
    assert counts(settings) == (before[0] + 2, before[1])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"event_type": ', "malformed_json"),
        (b"\xff\xfe not utf-8", "malformed_json"),
        (b"   ", "empty_body"),
        (b'"just a string"', "bad_shape"),
        (b'{"events": {"not": "a list"}}', "bad_shape"),
    ],
)
def test_bad_json_is_400_and_writes_nothing(
    collector: CollectorProcess, client: httpx.Client, body: bytes, code: str
) -> None:
    before = counts(collector.settings)
    response = client.post("/v1/events", content=body, headers={"Content-Type": "application/json", **AUTH})
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert counts(collector.settings) == before


def test_segment_body_of_the_wrong_shape_is_400(client: httpx.Client) -> None:
    assert post(client, "/v1/batch", [{"type": "track"}]).status_code == 400
    assert post(client, "/v1/track", [{"event": "x"}]).status_code == 400


def test_too_large_is_413_by_bytes_by_event_count_and_by_decompressed_size(
    collector: CollectorProcess, client: httpx.Client
) -> None:
    settings = collector.settings
    before = counts(settings)
    limit = settings.collector_max_body_bytes
    big = [event(properties={"url": "https://x", "pad": "x" * 4000}) for _ in range(limit // 4000 + 1)]
    big_body = orjson.dumps(big)
    assert len(big_body) > limit
    response = client.post(
        "/v1/events", content=big_body, headers={"Content-Type": "application/json", **AUTH}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(big_body), 65536):
            yield big_body[start : start + 65536]

    streamed = client.post(
        "/v1/events", content=chunks(), headers={"Content-Type": "application/json", **AUTH}
    )
    assert streamed.status_code == 413

    too_many = post(client, "/v1/events", [event() for _ in range(settings.collector_max_events + 1)])
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "too_many_events"
    assert post(client, "/v1/batch", {"batch": [{"type": "page"}] * 501}).status_code == 413

    bomb = gzip.compress(b"[" + b" " * (limit + 10) + b"]")
    zipped = client.post(
        "/v1/events",
        content=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **AUTH},
    )
    assert zipped.status_code == 413
    assert counts(settings) == before


def test_gzip_body_is_decoded(collector: CollectorProcess, client: httpx.Client) -> None:
    sent = event()
    response = client.post(
        "/v1/events",
        content=gzip.compress(orjson.dumps([sent])),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **AUTH},
    )
    assert response.json()["accepted"] == 1
    assert sent["event_id"] in {e["event_id"] for e in read_events(collector.settings)}
    broken = client.post(
        "/v1/events",
        content=b"not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **AUTH},
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "bad_gzip"
    brotli = client.post(
        "/v1/events",
        content=b"[]",
        headers={"Content-Type": "application/json", "Content-Encoding": "br", **AUTH},
    )
    assert brotli.status_code == 415


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/html", "", "multipart/form-data"]
)
def test_wrong_content_type_is_415(
    collector: CollectorProcess, client: httpx.Client, content_type: str
) -> None:
    before = counts(collector.settings)
    response = client.post(
        "/v1/events", content=orjson.dumps(event()), headers={"Content-Type": content_type, **AUTH}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]
    assert counts(collector.settings) == before


def test_cors_preflight_and_simple_request(client: httpx.Client) -> None:
    preflight = client.options(
        "/v1/events",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    denied = client.options(
        "/v1/events",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers
    simple = client.post(
        f"/v1/events?writeKey={WRITE_KEY}",
        content=orjson.dumps(event()),
        headers={"Content-Type": "text/plain", "Origin": "https://b.example"},
    )
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "https://b.example"


def test_tracker_js_is_served_as_javascript_with_cors(client: httpx.Client) -> None:
    response = client.get("/tracker.js", headers={"Origin": "https://shop.example"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert "/v1/events" in response.text


def test_segment_single_calls_are_mapped(collector: CollectorProcess, client: httpx.Client) -> None:
    ts = "2026-11-22T09:00:00.000+00:00"
    calls = {
        "/v1/track": {
            "event": "Product Viewed",
            "userId": "seg-1",
            "messageId": "m-track",
            "timestamp": ts,
            "properties": {"product_id": "p-9", "price": 3.5},
        },
        "/v1/page": {
            "anonymousId": "seg-anon",
            "messageId": str(uuid.uuid4()),
            "timestamp": ts,
            "name": "Home",
            "context": {"page": {"url": "https://shop.example/"}, "userAgent": "UA"},
        },
        "/v1/screen": {"userId": "seg-1", "messageId": "m-screen", "timestamp": ts, "name": "Cart"},
        "/v1/identify": {
            "userId": "seg-1",
            "messageId": "m-identify",
            "timestamp": ts,
            "traits": {"plan": "pro"},
        },
    }
    for path, message in calls.items():
        assert post(client, path, message).json() == {"accepted": 1, "rejected": 0, "errors": []}, path
    by_type = {e["event_type"]: e for e in read_events(collector.settings) if e.get("ts") == ts}
    assert by_type["product_view"]["properties"]["product_id"] == "p-9"
    assert by_type["product_view"]["context"]["message_id"] == "m-track"
    assert by_type["page_view"]["properties"] == {"url": "https://shop.example/", "name": "Home"}
    assert by_type["page_view"]["context"]["user_agent"] == "UA"
    assert by_type["page_view"]["event_id"] == calls["/v1/page"]["messageId"]
    assert by_type["screen_view"]["properties"] == {"name": "Cart"}
    assert by_type["identify"]["properties"] == {"traits": {"plan": "pro"}}


def test_healthz_and_metrics(collector: CollectorProcess, client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "stream": collector.settings.stream_name, "shards": 2}
    post(client, "/v1/events", [event(), {"nope": 1}])
    text = client.get("/metrics").text
    assert re.search(r'lambdalake_collector_requests_total\{route="/v1/events",status="200"\} [1-9]', text)
    assert re.search(r'lambdalake_collector_requests_total\{route="/v1/events",status="401"\} [1-9]', text)
    assert re.search(r'lambdalake_collector_events_total\{outcome="accepted",reason_class=""\} [1-9]', text)
    assert re.search(
        r'lambdalake_collector_events_total\{outcome="rejected",reason_class="[a-z_]+"\} [1-9]', text
    )
    assert 'lambdalake_collector_request_seconds_bucket{le="0.1",route="/v1/events"}' in text


def test_pii_masking_on_the_stream_and_in_the_dlq(engines: Settings) -> None:
    settings = collector_settings(
        engines,
        collector_pii_mask_ip=True,
        collector_pii_hash_fields="email,phone",
        collector_pii_hash_key=PII_KEY,
    )
    masker = PiiMasker(False, ["email"], PII_KEY)
    sent = event(
        context={"ip": "198.51.100.23"},
        properties={"url": "https://x", "email": "a@b.example"},
    )
    identify = event(
        event_type="identify",
        user_id="u-pii",
        properties={"traits": {"email": "a@b.example", "phone": None}},
        context={"ip": "2001:db8:1234:5678::1"},
    )
    rejected = event(
        context={"ip": "192.0.2.200"}, properties={"email": "c@d.example"}
    )  # page_view without url
    with running_collector(settings) as process, httpx.Client(base_url=process.url) as client:
        body = post(client, "/v1/events", [sent, identify, rejected]).json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    written = {e["event_id"]: e for e in read_events(settings)}
    assert written[sent["event_id"]]["context"]["ip"] == "198.51.100.0"
    assert written[sent["event_id"]]["properties"]["email"] == masker.hash_value("a@b.example")
    assert written[identify["event_id"]]["context"]["ip"] == "2001:db8:1234::"
    assert written[identify["event_id"]]["properties"]["traits"] == {
        "email": masker.hash_value("a@b.example"),
        "phone": None,
    }
    [letter] = read_dead_letters(settings)
    assert letter["payload"]["context"]["ip"] == "192.0.2.0"
    assert letter["payload"]["properties"]["email"] == masker.hash_value("c@d.example")


class ThrottlingKinesis(BaseHTTPRequestHandler):
    """Kinesis's JSON protocol in front of kinesalite, answering every PutRecords with every record
    throttled: kinesalite never throttles, and this is the response shape Kinesis uses when it does."""

    upstream = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("X-Amz-Target", "").endswith(".PutRecords"):
            records = orjson.loads(body)["Records"]
            error = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
            status, payload = (
                200,
                orjson.dumps({"FailedRecordCount": len(records), "Records": [error] * len(records)}),
            )
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            upstream = httpx.post(self.upstream, content=body, headers=headers)
            status, payload = upstream.status_code, upstream.content
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_stream_still_throttled_after_retries_is_429_with_retry_after(engines: Settings) -> None:
    base = collector_settings(engines)
    handler = type("Handler", (ThrottlingKinesis,), {"upstream": base.kinesis_endpoint})
    proxy = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    settings = Settings(
        _env_file=None,
        **{**base.model_dump(), "kinesis_endpoint_url": f"http://127.0.0.1:{proxy.server_port}"},
    )
    try:
        with running_collector(settings) as process, httpx.Client(base_url=process.url, timeout=60) as client:
            response = post(client, "/v1/events", [event(), {"bad": 1}])
            assert response.status_code == 429
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["code"] == "stream_throttled"
            assert client.get("/healthz").status_code == 200
            assert re.search(
                r'lambdalake_collector_stream_errors_total\{kind="throttled",stream="[^"]+"\} 1\.0',
                client.get("/metrics").text,
            )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert counts(base) == (0, 0)  # nothing accepted, and no DLQ record for a request the client must resend


def test_unreachable_stream_is_503_with_retry_after(engines: Settings) -> None:
    base = collector_settings(engines)
    settings = Settings(
        _env_file=None, **{**base.model_dump(), "kinesis_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    with (
        running_collector(settings, require_healthy=False) as process,
        httpx.Client(base_url=process.url, timeout=60) as client,
    ):
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        response = post(client, "/v1/events", [event()])
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(settings.collector_unavailable_retry_after_s)
        assert response.json()["code"] == "stream_unavailable"
        assert process.alive()


@pytest.mark.slow
def test_metrics_sum_every_worker(engines: Settings) -> None:
    settings = collector_settings(engines, collector_workers=2, collector_bus="noop")
    requests = 40
    with running_collector(settings) as process:
        for _ in range(requests):  # a new connection each time, so the kernel spreads them over workers
            with httpx.Client(base_url=process.url) as client:
                assert post(client, "/v1/events", [event(), event()]).status_code == 200
        scrapes = []
        for _ in range(6):
            with httpx.Client(base_url=process.url) as client:
                scrapes.append(client.get("/metrics").text)
    pattern = r'lambdalake_collector_requests_total\{route="/v1/events",status="200"\} (\S+)'
    assert {float(re.search(pattern, text).group(1)) for text in scrapes} == {requests}  # type: ignore[union-attr]
    accepted = r'lambdalake_collector_events_total\{outcome="accepted",reason_class=""\} (\S+)'
    assert {float(re.search(accepted, text).group(1)) for text in scrapes} == {2 * requests}  # type: ignore[union-attr]
