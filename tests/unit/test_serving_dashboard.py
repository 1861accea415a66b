"""The dashboard's routes in-process (no services): the page, its files, the npm chart library."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from lambdalake.settings import Settings
from serving.dashboard import DASHBOARD_DIR, NODE_MODULES, PROJECT_ROOT, VENDOR_FILES, mount_dashboard


class Client:
    """GET requests to an app with only the dashboard mounted, in-process over ASGI."""

    def __init__(self, node_modules: Path) -> None:
        self.app = FastAPI()
        mount_dashboard(self.app, Settings(_env_file=None), node_modules=node_modules)

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://serving") as http:
                return await http.get(path)

        return asyncio.run(go())


def client(node_modules: Path = NODE_MODULES) -> Client:
    return Client(node_modules)


@pytest.fixture
def fake_modules(tmp_path: Path) -> Path:
    for name, relative in VENDOR_FILES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(f"/* {name} */")
    return tmp_path


def test_the_page_and_its_files_are_served() -> None:
    http = client()
    page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    for src in ("/static/app.js", "/static/app.css", "/vendor/uplot.js", "/vendor/uplot.css"):
        assert f'"{src}"' in page.text
    for name in ("app.js", "app.css"):
        answer = http.get(f"/static/{name}")
        assert answer.status_code == 200
        assert answer.content == (DASHBOARD_DIR / name).read_bytes()
    assert http.get("/static/nothing.js").status_code == 404


def test_vendor_files_come_from_node_modules(fake_modules: Path) -> None:
    http = client(fake_modules)
    answer = http.get("/vendor/uplot.js")
    assert answer.status_code == 200
    assert answer.text == "/* uplot.js */"
    assert "javascript" in answer.headers["content-type"]
    assert http.get("/vendor/uplot.css").headers["content-type"].startswith("text/css")


def test_a_missing_vendor_file_is_a_404_and_the_page_still_loads(tmp_path: Path) -> None:
    http = client(tmp_path)  # node_modules without uplot: set-up not run
    missing = http.get("/vendor/uplot.js")
    assert missing.status_code == 404
    assert "make setup" in missing.json()["detail"]
    assert http.get("/").status_code == 200
    assert http.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("name", ["nope.js", "..%2Fpackage.json", "uPlot.iife.min.js", ""])
def test_only_the_listed_vendor_files_are_served(fake_modules: Path, name: str) -> None:
    (fake_modules / "package.json").write_text("{}")
    assert client(fake_modules).get(f"/vendor/{name}").status_code == 404


def test_the_chart_library_is_pinned_in_the_project_set_up_and_installed() -> None:
    package = json.loads((PROJECT_ROOT / "package.json").read_text())
    lock = json.loads((PROJECT_ROOT / "package-lock.json").read_text())
    version = package["dependencies"]["uplot"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin an exact version (npm install --save-exact)"
    assert lock["packages"]["node_modules/uplot"]["version"] == version
    assert lock["packages"][""]["dependencies"]["uplot"] == version
    # `make setup` (npm ci) installs it: the real file is what the page gets
    installed = json.loads((NODE_MODULES / "uplot" / "package.json").read_text())
    assert installed["version"] == version
    answer = client().get("/vendor/uplot.js")
    assert answer.status_code == 200
    assert answer.content == (NODE_MODULES / VENDOR_FILES["uplot.js"]).read_bytes()


def test_the_page_loads_nothing_from_elsewhere_and_its_test_ids_are_unique() -> None:
    html = (DASHBOARD_DIR / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(sources) == 4
    assert all(s.startswith(("/static/", "/vendor/")) for s in sources)
    script = (DASHBOARD_DIR / "app.js").read_text()
    assert not re.search(r"https?://", script)  # no CDN, no hard-coded host: same origin only
    ids = re.findall(r'data-testid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for testid in ("active-users-5m", "active-users-1h", "active-users-1d", "watermark", "degraded"):
        assert testid in ids
