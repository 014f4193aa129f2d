"""`nudge serve` end to end in headless Chromium against a real uvicorn server.

The whole path a shopper takes: the dispatcher sends the winback email through a real
SMTP server (aiosmtpd) with the server's tracked links; the browser follows the
email's link through `/c/` to the personalised landing page (the user's own coupon
code), then the email's unsubscribe link, one click; the store holds the click and
the view, and the next dispatch skips the user. The server runs in a thread on
127.0.0.1 with `[delivery] base_url` pointing at it, so the links open live pages.
Console errors include CSP violations, so the headers must match what pages need.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
import sqlalchemy as sa
from conftest import CHROMIUM_ARGS, make_settings, service_missing
from serve_helpers import (
    LANDING_SECRET,
    SERVE_SECRET,
    T0,
    add_user,
    events_of,
    outbox_states,
    plan_email,
    serve_project,
)

from engine.delivery.channels import build_channels
from engine.delivery.dispatcher import dispatch_until_idle
from engine.serve.app import create_app
from engine.store import open_store
from engine.store.delivery import Coupon
from engine.store.people import User
from tests.delivery.sinks import SmtpSink

NOW = T0 + timedelta(hours=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(project_dir, store_url, monkeypatch):
    import uvicorn

    monkeypatch.setenv("NUDGE_SERVE_SECRET", SERVE_SECRET.decode())
    monkeypatch.setenv("NUDGE_SECRET_KEY", LANDING_SECRET.decode())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_project(project_dir, store_url)  # rules and templates
    with SmtpSink() as sink:
        settings = make_settings(
            project_dir,
            shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
            database={"url": store_url},
            delivery={"base_url": f"{base}/lp"},
            serve={"base_url": base},
            **{
                "delivery.email": {
                    "backend": "smtp",
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "from_address": "hello@shop.example.com",
                    # RFC 8058 wants https: the proxy's origin; the browser opens the
                    # same path on the server itself.
                    "unsubscribe_url": "https://go.example.com/u/{token}",
                }
            },
        )
        store = open_store(settings)
        add_user(store, "u1", name="Alex Morgan", locale="en")
        add_user(store, "u2", name="Grace Hopper", locale="en")
        app = create_app(settings, store=store, now=lambda: NOW)
        uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not uv.started and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting for the server to listen, not for time to pass
        assert uv.started
        try:
            yield base, store, sink
        finally:
            uv.should_exit = True
            thread.join(timeout=10)
            store.dispose()


def dispatch(store) -> None:
    with build_channels(store.settings) as channels:
        dispatch_until_idle(store, now=NOW, worker_id="w", channels=channels)


def email_to(sink, user_id: str):
    [message] = [m for m in sink.messages if m["To"].addresses[0].username == user_id]
    return message_from_bytes(message.as_bytes(), policy=policy.default)


def code_of(store, user_id: str) -> str:
    coupons = Coupon.__table__
    with store.connect() as connection:
        return connection.execute(
            sa.select(coupons.c.code).where(coupons.c.user_id == user_id)
        ).scalar_one()


@pytest.mark.browser
def test_from_the_email_to_the_landing_page_and_unsubscribe_in_a_browser(server):
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists():
        service_missing("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    base, store, sink = server
    for number, user_id in enumerate(("u1", "u2"), start=1):
        plan_email(store, user_id, decision_id=number, variant="standard")
    dispatch(store)
    email = email_to(sink, "u1")
    html = email.get_body(("html",)).get_content()
    tracked = sorted(set(re.findall(rf'href="({re.escape(base)}/c/[^"]+)"', html)))
    assert tracked and f"{base}/lp/" not in html  # every link goes through /c/
    code = code_of(store, "u1")
    assert code in html
    header = email["List-Unsubscribe"].strip("<> ")
    assert header.startswith("https://go.example.com/u/")
    unsubscribe_url = header.replace("https://go.example.com", base)
    assert unsubscribe_url in html.replace("https://go.example.com", base)  # the body link
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(locale="en-US")
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            landing = []
            for link in tracked:
                response = page.goto(link)
                assert response is not None and response.status == 200
                if "/lp/winback/en/standard.html" in page.url:
                    landing.append(page.url)
                    assert page.locator(".code").inner_text() == code
                    assert page.locator(".hello").inner_text() == "Hi Alex!"
                    assert page.locator("a.cta").is_visible()
            assert len(landing) == 1

            page.goto(unsubscribe_url)
            page.locator("button").click()
            page.wait_for_selector("text=You are unsubscribed")
            assert errors == []
        finally:
            browser.close()
    types = [event["type"] for event in events_of(store, "u1")]
    assert types.count("email_click") == len(tracked) and "landing_view" in types
    assert events_of(store, "u2") == []
    with store.connect() as connection:
        users = User.__table__
        when = connection.execute(
            sa.select(users.c.unsubscribed_at).where(users.c.id == "u1")
        ).scalar()
    assert when == NOW
    # The next campaign: the unsubscribed user is skipped, the other gets it.
    for number, user_id in enumerate(("u1", "u2"), start=3):
        plan_email(store, user_id, decision_id=number, variant="standard")
    dispatch(store)
    assert ("u1", "email", "skipped", "unsubscribed") in outbox_states(store)
    assert len(sink.messages) == 3
