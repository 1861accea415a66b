"""The collector's HTTP layer in-process (noop bus, no services): auth parsing, gzip, the tracker route."""

from __future__ import annotations

import asyncio
import base64
import gzip
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ingest.collector import app as app_module
from ingest.collector.app import RequestError, create_app, gunzip
from ingest.collector.auth import WriteKeys, key_from_header
from lambdalake.errors import LambdalakeError
from lambdalake.settings import Settings

AUTH = {"Authorization": "Bearer k1"}


class Client:
    """Requests to the app in-process over ASGI (no server, no services)."""

    def __init__(self) -> None:
        self.app = create_app(Settings(_env_file=None, collector_bus="noop", write_keys="k1,k2"))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://collector") as http:
                return await http.request(method, path, **kwargs)

        return asyncio.run(go())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic " + base64.b64encode(b"abc:").decode(), "abc"),
        ("Basic " + base64.b64encode(b"abc:secret").decode(), "abc"),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        ("Basic ###", None),
        ("Basic " + base64.b64encode(b"\xff\xfe").decode(), None),
        ("Bearer", None),
        ("Digest abc", None),
        (None, None),
    ],
)
def test_key_from_header(header: str | None, key: str | None) -> None:
    assert key_from_header(header) == key


def test_write_keys() -> None:
    keys = WriteKeys(["k1", "k2", ""])
    assert keys.allows("k2")
    assert not keys.allows("k")
    assert not keys.allows("")
    assert not keys.allows(None)
    assert not WriteKeys([]).allows("k1")


def test_gunzip_limits() -> None:
    assert gunzip(gzip.compress(b"[1]"), 10) == b"[1]"
    with pytest.raises(RequestError) as too_big:
        gunzip(gzip.compress(b"x" * 11), 10)
    assert too_big.value.status == 413
    with pytest.raises(RequestError) as truncated:
        gunzip(gzip.compress(b"[1, 2, 3]")[:-6], 100)
    assert truncated.value.status == 400


def test_tracker_missing_is_a_clear_404(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(app_module, "TRACKER_PATH", tmp_path / "tracker.js")
    response = client.get("/tracker.js")
    assert response.status_code == 404
    assert "tracker.js" in response.json()["message"]
    (tmp_path / "tracker.js").write_text("window.x = 1;")
    served = client.get("/tracker.js")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/javascript; charset=utf-8"
    assert served.text == "window.x = 1;"


def test_noop_bus_accepts_and_reports_healthy(client: Client) -> None:
    body = orjson.dumps(
        [{"event_type": "x", "anonymous_id": "a", "ts": "2026-11-22T00:00:00Z", "properties": {}}]
    )
    response = client.post("/v1/events", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": []}
    assert client.get("/healthz").json() == {"status": "ok", "bus": "noop"}


def test_unknown_routes_and_methods_are_4xx(client: Client) -> None:
    assert client.get("/v1/events").status_code == 405
    assert client.post("/v2/events", headers=AUTH).status_code == 404
    bad_length = client.post(
        "/v1/events",
        content=b"[]",
        headers={**AUTH, "Content-Type": "application/json", "Content-Length": "x"},
    )
    assert bad_length.status_code == 400


def test_hash_fields_without_a_key_fail_at_startup() -> None:
    settings = Settings(_env_file=None, collector_bus="noop", collector_pii_hash_fields="email")
    with pytest.raises(LambdalakeError, match="LAMBDALAKE_COLLECTOR_PII_HASH_KEY"):
        create_app(settings)


def test_segment_routes_take_the_write_key_from_the_body_native_does_not(client: Client) -> None:
    message = {"type": "track", "event": "Clicked", "anonymousId": "a", "properties": {}}
    headers = {"Content-Type": "text/plain"}
    ok = client.post(
        "/v1/batch", content=orjson.dumps({"batch": [message], "writeKey": "k2"}), headers=headers
    )
    assert ok.json() == {"accepted": 1, "rejected": 0, "errors": []}
    assert (
        client.post(
            "/v1/track", content=orjson.dumps({**message, "writeKey": "k1"}), headers=headers
        ).status_code
        == 200
    )
    for body in ({**message, "writeKey": "nope"}, message, [message]):
        assert client.post("/v1/track", content=orjson.dumps(body), headers=headers).status_code == 401
    native = {
        "event_type": "x",
        "anonymous_id": "a",
        "ts": "2026-11-22T00:00:00Z",
        "properties": {},
        "writeKey": "k1",
    }
    assert client.post("/v1/events", content=orjson.dumps(native), headers=headers).status_code == 401
    wrong_header = {**headers, "Authorization": "Bearer nope"}
    body = orjson.dumps({**message, "writeKey": "k1"})
    assert client.post("/v1/track", content=body, headers=wrong_header).status_code == 401
