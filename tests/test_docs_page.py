"""`/docs` renders the API's operations in headless Chromium with no network beyond this
server: Swagger UI comes from our packaged files, under a CSP that allows only this origin."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess, cli
from tests.test_verify_page import ARGS, CHROMIUM, WAIT_MS, _missing, context

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("docs") / "data"
    assert cli("init", "--data-dir", str(data)).returncode == 0
    srv = ServerProcess(data).start()
    yield srv
    srv.stop()


def test_docs_page_and_assets_come_from_this_server(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/docs")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp
    assert "http" not in csp and "http" not in r.text  # no CDN, no other origin
    assert "<script>" not in r.text  # no inline script
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "docs-init.js"):
        a = httpx.get(f"{server.url}/static/docs/{name}")
        assert a.status_code == 200 and len(a.content) > 200, name
    for bad in ("../docs.py", "index.html", "%2e%2e%2fapp.py", "redoc.standalone.js"):
        r = httpx.get(f"{server.url}/static/docs/{bad}")
        assert r.status_code == 404, bad


def test_docs_render_the_operations_offline(server: ServerProcess) -> None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"headless Chromium ({CHROMIUM}; Debian: chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package")
    foreign: list[str] = []
    console: list[str] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = context(b)

            def route(r: Any) -> None:  # offline: anything not from this server fails
                if r.request.url.startswith(server.url):
                    r.continue_()
                else:
                    foreign.append(r.request.url)
                    r.abort()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(server.url + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            b.close()
    assert foreign == []
    assert not [c for c in console if "Content Security Policy" in c], console
    assert "/v1/works" in [x.strip().replace("\u200b", "") for x in paths]
    assert len(paths) >= 20
