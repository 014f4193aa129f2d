"""The built landing site in headless Chromium: no console errors, the offer visible.

Served by a real HTTP server on 127.0.0.1; one screenshot per page is saved under
test-artifacts/landing/ for a human to look at.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
from conftest import CHROMIUM_ARGS, service_missing
from creative_helpers import NOW, REPO, project

from engine.creatives.landing import build_landing_site

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "landing"


@pytest.fixture
def site(tmp_path):
    settings = project(tmp_path / "shop")
    out = tmp_path / "site"
    pages = build_landing_site(settings, out, now=NOW, uses=[])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))

    class QuietHandler(handler.func):
        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(out))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", out, pages
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_landing_pages_open_without_console_errors_and_show_the_offer(site):
    if not CHROMIUM.exists():
        service_missing("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    base, out, pages = site
    assert len(pages) == 12
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            response = page.goto(f"{base}/index.html")
            assert response is not None and response.status == 200
            assert page.locator("a").count() == 12
            for landing in pages:
                relative = landing.path.relative_to(out).as_posix()
                response = page.goto(f"{base}/{relative}")
                assert response is not None and response.status == 200, relative
                amount = page.locator(".amount")
                assert amount.is_visible(), relative
                expected = "¥20" if landing.locale == "zh-CN" else "CN¥20"
                assert amount.inner_text() == expected, relative
                assert page.locator(".code").inner_text() == "NUDGE2026"
                assert page.locator("a.cta").is_visible()
                name = f"{landing.creative}-{landing.locale}-{landing.variant or 'default'}.png"
                page.screenshot(path=str(ARTIFACTS / name), full_page=True)
            assert errors == []
        finally:
            browser.close()
