"""`nudge serve` end to end in headless Chromium against a real uvicorn server.

The server runs in a thread on 127.0.0.1, with `[delivery] base_url` pointing at it,
so the links of a rendered email open live pages: the personalised landing page shows
the user's coupon code, a tracked click lands on it, and the unsubscribe button works.
Console errors include CSP violations, so the headers must match what pages need.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import make_settings, service_missing
from serve_helpers import (
    CODE,
    LANDING_SECRET,
    RULE,
    SERVE_SECRET,
    T0,
    add_coupon,
    add_user,
    events_of,
    serve_project,
)

from engine.creatives.context import build_context
from engine.creatives.render import render_creative
from engine.delivery.unsubscribe import ensure_tokens
from engine.serve.app import create_app
from engine.serve.clicks import click_url
from engine.store import open_store
from engine.store.people import User

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOW = T0 + timedelta(hours=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(project_dir, store_url):
    import uvicorn

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_project(project_dir, store_url)  # rules and templates
    settings = make_settings(
        project_dir,
        shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
        database={"url": store_url},
        delivery={"base_url": f"{base}/lp"},
        serve={"base_url": base},
    )
    store = open_store(settings)
    add_user(store, "u1", name="Alex Morgan", locale="en")
    add_coupon(store, "u1")
    app = create_app(
        settings, store=store, secret=SERVE_SECRET, landing_secret=LANDING_SECRET, now=lambda: NOW
    )
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uv.started
    try:
        yield base, settings, store
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        store.dispose()


def email_link(settings, base: str) -> str:
    """The landing link of the winback email rendered for u1 with their coupon."""
    context = build_context(
        {"id": "u1", "name": "Alex Morgan", "locale": "en"},
        {"code": CODE, "value": 20, "currency": "CNY", "min_order": 100, "expires_in": "14d"},
        rule_id=RULE,
        variant="standard",
        settings=settings,
        base_url=f"{base}/lp",
        secret=LANDING_SECRET,
        now=NOW,
    )
    html = render_creative(settings, "winback", "email_html", context).text
    links = re.findall(r'href="([^"]+)"', html)
    [link] = {link.replace("&amp;", "&") for link in links if "/lp/winback/en/" in link}
    return link


@pytest.mark.browser
def test_landing_click_and_unsubscribe_in_a_browser(server):
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists():
        service_missing("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    base, settings, store = server
    link = email_link(settings, base)
    assert link.startswith(f"{base}/lp/winback/en/standard.html?") and "t=" in link
    with store.begin() as connection:
        unsubscribe_token = ensure_tokens(connection, ["u1"], T0)["u1"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(locale="en-US")
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            response = page.goto(link)
            assert response is not None and response.status == 200
            assert page.locator(".code").inner_text() == CODE
            assert page.locator(".hello").inner_text() == "Hi Alex!"
            assert page.locator("a.cta").is_visible()

            tracked = click_url(
                base,
                SERVE_SECRET,
                user_id="u1",
                rule_id=RULE,
                decision_id=1,
                channel="email",
                target=link,
                now=NOW,
            )
            response = page.goto(tracked)
            assert response is not None and response.status == 200
            assert page.url == link
            assert page.locator(".code").inner_text() == CODE

            page.goto(f"{base}/u/{unsubscribe_token}")
            page.locator("button").click()
            page.wait_for_selector("text=You are unsubscribed")
            assert errors == []
        finally:
            browser.close()
    types = [event["type"] for event in events_of(store, "u1")]
    assert types.count("email_click") == 1 and "landing_view" in types
    with store.connect() as connection:
        users = User.__table__
        when = connection.execute(
            sa.select(users.c.unsubscribed_at).where(users.c.id == "u1")
        ).scalar()
    assert when == NOW
