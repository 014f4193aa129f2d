"""`nudge serve` routes through Starlette's TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from email import message_from_bytes, policy
from urllib.parse import parse_qsl, urlsplit

import pytest
import sqlalchemy as sa
from conftest import make_settings
from serve_helpers import (
    CODE,
    LANDING_SECRET,
    RULE,
    SERVE_SECRET,
    T0,
    TestClient,  # noqa: I001
    add_coupon,
    add_user,
    events_of,
    outbox_states,
    plan_email,
    serve_project,
)

from engine.creatives.links import message_link_token, sign_token
from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.unsubscribe import ensure_tokens
from engine.serve.app import create_app
from engine.serve.clicks import click_url
from engine.serve.safety import ClickToken, TokenBucket, sign_click
from engine.store import open_store
from engine.store.people import User

NOW = T0 + timedelta(hours=1)
LANDING = f"/l/{RULE}/standard"
SITE = "https://shop.example.com/lp"  # `[delivery] base_url`
TARGET = "https://shop.example.com/lp/winback/en/standard.html?utm_source=email&utm_medium=email&utm_campaign=winback-lapsed-members&x=1"


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


@pytest.fixture
def served(project_dir, store_url):
    settings = serve_project(project_dir, store_url)
    store = open_store(settings)
    add_user(store, "u1", name="Alex Morgan", locale="en")
    add_user(store, "u2", name="王小明", locale="zh-CN")
    add_coupon(store, "u1")
    clock = Clock()
    app = create_app(
        settings,
        store=store,
        secret=SERVE_SECRET,
        landing_secret=LANDING_SECRET,
        now=clock,
        rate_limiter=TokenBucket(capacity=5, rate=0.001),
    )
    with TestClient(app, follow_redirects=False) as client:
        client.clock = clock
        client.store = store
        yield client
    store.dispose()


def assert_security_headers(response):
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["content-security-policy"]


def token(user_id="u1", rule=RULE, secret=LANDING_SECRET, expires_at=NOW + timedelta(days=90)):
    return sign_token(secret, user_id, rule, expires_at=expires_at)


# -- landing pages


def test_generic_landing_page_in_the_visitors_language(served):
    response = served.get(LANDING, headers={"accept-language": "en-US,en;q=0.9"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)
    assert '<html lang="en">' in response.text
    assert "CN¥20" in response.text
    assert CODE not in response.text and "hello" not in response.text
    assert events_of(served.store) == []
    # No Accept-Language: the shop's locale (zh-CN).
    response = served.get(LANDING)
    assert '<html lang="zh-CN">' in response.text and "回归礼" in response.text
    # A language the creative lacks falls back to the shop's.
    assert '<html lang="zh-CN">' in served.get(LANDING, headers={"accept-language": "fr"}).text


def test_personalised_landing_page_shows_the_users_code_and_records_a_view(served, monkeypatch):
    from engine.serve import events

    signals = []
    real_signal = events.signal_change
    monkeypatch.setattr(events, "signal_change", lambda c: signals.append(real_signal(c)))
    url = f"{LANDING}?utm_source=email&utm_medium=email&utm_campaign={RULE}&gclid=G1&t={token()}"
    response = served.get(url, headers={"accept-language": "en"})
    assert response.status_code == 200
    assert CODE in response.text
    assert "Hi Alex!" in response.text
    assert "Valid until" in response.text
    assert response.headers["cache-control"] == "private, no-store"
    [event] = events_of(served.store, "u1")
    assert event["type"] == "landing_view"
    assert event["utm_source"] == "email" and event["utm_campaign"] == RULE
    assert event["properties"]["gclid"] == "G1"
    assert event["properties"]["rule_id"] == RULE
    assert event["properties"]["variant"] == "standard"
    assert len(signals) == 1  # wakes the daemons
    # A reload in the same minute records nothing more; a minute later, a new view.
    served.get(url)
    assert len(events_of(served.store, "u1")) == 1
    assert len(signals) == 1
    served.clock.now = NOW + timedelta(minutes=1)
    served.get(url)
    assert len(events_of(served.store, "u1")) == 2


def test_personalised_page_without_a_live_coupon_shows_the_generic_offer(served):
    add_coupon(served.store, "u2", "WB-OLD-0002", expires_at=NOW - timedelta(seconds=1))
    response = served.get(f"{LANDING}?t={token('u2')}")
    assert response.status_code == 200
    assert "WB-OLD-0002" not in response.text and CODE not in response.text
    assert [e["type"] for e in events_of(served.store, "u2")] == ["landing_view"]


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        token()[:-2] + "AA",  # tampered signature
        token("u2")[:-3] + token()[-3:],  # spliced
        token(rule="double-eleven"),  # another rule's token
        token(secret=b"other-secret"),  # forged with another key
        token("ghost"),  # a user the store does not have
        token(expires_at=NOW),  # expired this very second
        token().split(".")[0] + "." + token().split(".")[2],  # no expiry (the old format)
    ],
)
def test_invalid_landing_token_shows_the_generic_page_and_records_nothing(served, bad):
    response = served.get(f"{LANDING}?t={bad}", headers={"accept-language": "en"})
    assert response.status_code == 200
    assert CODE not in response.text and "Hi Alex" not in response.text
    assert "CN¥20" in response.text
    assert events_of(served.store) == []


@pytest.mark.parametrize(
    "path", [f"/l/{RULE}/nope", "/l/no-such-rule/standard", "/l/sample/default", "/nothing"]
)
def test_unknown_rule_or_variant_is_a_404_page(served, path):
    response = served.get(path)
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert_security_headers(response)


def test_rule_without_variants_is_served_as_default(served):
    assert served.get("/l/first-purchase-thank-you/default").status_code == 200


# -- clicks


def click(target=TARGET, *, channel="email", secret=SERVE_SECRET, now=NOW, **kw):
    url = click_url(
        "https://go.example.com",
        secret,
        user_id=kw.get("user_id", "u1"),
        rule_id=RULE,
        decision_id=7,
        channel=channel,
        target=target,
        now=now,
        ttl=kw.get("ttl", timedelta(days=30)),
    )
    return urlsplit(url).path


def test_click_records_the_event_and_redirects_keeping_the_query(served):
    response = served.get(click() + "?fbclid=ignored")
    assert response.status_code == 302
    assert response.headers["location"] == TARGET
    [event] = events_of(served.store, "u1")
    assert event["type"] == "email_click"
    assert event["utm_source"] == "email" and event["utm_campaign"] == RULE
    assert event["properties"]["decision_id"] == 7
    assert event["properties"]["url"] == TARGET
    served.get(click())  # a double click in the same minute is one click
    assert len(events_of(served.store, "u1")) == 1


def test_sms_click(served):
    assert served.get(click(channel="sms")).status_code == 302
    assert [e["type"] for e in events_of(served.store)] == ["sms_click"]


def test_tampered_click_token_is_a_400_and_never_redirects(served):
    good = click().removeprefix("/c/")
    payload, signature = good.split(".")
    evil = click(target="https://evil.example.net/phish").removeprefix("/c/").split(".")[0]
    for bad in (
        f"{evil}.{signature}",  # another target under the original signature
        f"{payload}.{signature[:-1]}A",
        payload,
        "x.y",
    ):
        response = served.get(f"/c/{bad}")
        assert response.status_code == 400, bad
        assert "location" not in response.headers
        assert_security_headers(response)
    assert events_of(served.store) == []


def test_click_to_an_undeclared_origin_is_refused_even_when_signed(served):
    for target in ("https://evil.example.net/x", "javascript:alert(1)", "//evil.example.net/"):
        response = served.get(click(target=target))
        assert response.status_code == 400
        assert "location" not in response.headers
    # The serve origin is declared too.
    assert served.get(click(target="https://go.example.com/l/x/y")).status_code == 302


def test_click_token_signed_with_another_secret_is_a_400(served):
    assert served.get(click(secret=b"someone-else")).status_code == 400


def test_expired_click_token_is_a_410_without_redirect(served):
    path = click(now=NOW - timedelta(days=31))
    response = served.get(path)
    assert response.status_code == 410
    assert "location" not in response.headers
    assert events_of(served.store) == []


def test_click_of_an_unknown_channel_is_refused(served):
    token_text = sign_click(SERVE_SECRET, ClickToken("u1", RULE, 1, "fax", TARGET, 2**40))
    assert served.get(f"/c/{token_text}").status_code == 400


# -- unsubscribe


def unsubscribe_token(store, user_id="u1"):
    with store.begin() as connection:
        return ensure_tokens(connection, [user_id], T0)[user_id]


def unsubscribed_at(store, user_id="u1"):
    users = User.__table__
    with store.connect() as connection:
        query = sa.select(users.c.unsubscribed_at).where(users.c.id == user_id)
        return connection.execute(query).scalar()


def test_unsubscribe_page_in_the_users_locale(served):
    response = served.get(f"/u/{unsubscribe_token(served.store, 'u2')}")
    assert response.status_code == 200
    assert '<html lang="zh-CN">' in response.text and "退订" in response.text
    assert '<form method="post">' in response.text
    assert_security_headers(response)
    response = served.get(f"/u/{unsubscribe_token(served.store, 'u1')}")
    assert "Unsubscribe from our emails?" in response.text
    assert unsubscribed_at(served.store) is None  # GET changes nothing


def test_one_click_post_unsubscribes_at_once(served):
    token_text = unsubscribe_token(served.store)
    response = served.post(
        f"/u/{token_text}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert "set-cookie" not in response.headers and "location" not in response.headers
    assert unsubscribed_at(served.store) == NOW
    # Again (a provider retries): still fine, the first instant is kept.
    served.clock.now = NOW + timedelta(hours=1)
    assert served.post(f"/u/{token_text}").status_code == 200
    assert unsubscribed_at(served.store) == NOW


def test_unknown_unsubscribe_token_is_a_404(served):
    assert served.get("/u/unothing").status_code == 404
    assert served.post("/u/unothing", content=b"List-Unsubscribe=One-Click").status_code == 404


def test_unsubscribe_then_dispatch_skips_the_planned_email(served):
    plan_email(served.store, "u1", decision_id=1)
    plan_email(served.store, "u2", decision_id=2)
    token_text = unsubscribe_token(served.store)
    assert served.post(f"/u/{token_text}", content=b"List-Unsubscribe=One-Click").is_success
    sink = NoopChannel()
    dispatch_until_idle(served.store, now=NOW, worker_id="w", channels=ChannelSet({"email": sink}))
    states = outbox_states(served.store)
    assert ("u1", "email", "skipped", "unsubscribed") in states
    assert ("u2", "email", "sent", None) in states
    assert len(sink.sent) == 1


def test_rate_limit_per_ip_on_unsubscribe(served):
    for _ in range(5):
        assert served.get("/u/unothing").status_code == 404
    response = served.get("/u/unothing")
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert_security_headers(response)
    # Other routes are not limited.
    assert served.get(LANDING).status_code == 200


def test_oversized_body_is_a_413(served):
    token_text = unsubscribe_token(served.store)
    response = served.post(f"/u/{token_text}", content=b"x" * (17 * 1024))
    assert response.status_code == 413
    assert unsubscribed_at(served.store) is None

    def chunks():  # no Content-Length: read up to the limit, then refused
        for _ in range(20):
            yield b"y" * 1024

    response = served.post(f"/u/{token_text}", content=chunks())
    assert response.status_code == 413
    assert unsubscribed_at(served.store) is None


# -- safety


def test_healthz(served):
    response = served.get("/healthz")
    assert response.status_code == 200 and response.text == "ok\n"


def test_errors_are_a_generic_page_without_a_traceback(served, monkeypatch):
    from engine.serve import landing

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals: /srv/nudge/engine/serve/landing.py")

    monkeypatch.setattr(landing, "render_landing", boom)
    client = TestClient(served.app, raise_server_exceptions=False)
    response = client.get(LANDING)
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert_security_headers(response)


def test_method_not_allowed_is_a_page(served):
    response = served.post(LANDING)
    assert response.status_code == 405
    assert "Method not allowed" in response.text
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]


def test_static_site_paths_are_served_when_the_landing_site_is_this_server(project_dir, store_url):
    serve_project(project_dir, store_url)
    settings = make_settings(
        project_dir,
        shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
        database={"url": store_url},
        delivery={"base_url": "https://go.example.com/lp"},
        serve={"base_url": "https://go.example.com"},
    )
    store = open_store(settings)
    try:
        add_user(store, "u1", name="Alex Morgan", locale="en")
        add_coupon(store, "u1")
        app = create_app(
            settings,
            store=store,
            secret=SERVE_SECRET,
            landing_secret=LANDING_SECRET,
            now=lambda: NOW,
        )
        client = TestClient(app)
        page = f"/lp/winback/en/standard.html?utm_campaign={RULE}&t={token()}"
        response = client.get(page)
        assert response.status_code == 200 and CODE in response.text
        assert '<html lang="en">' in response.text
        assert [e["type"] for e in events_of(store)] == ["landing_view"]
        assert client.get("/lp/winback/fr/standard.html").status_code == 404
        assert client.get("/lp/nothing/en/standard.html").status_code == 404
        assert client.get("/winback/en/standard.html").status_code == 404
    finally:
        store.dispose()


# -- the tracked links of dispatched emails and SMS


def html_of(sent) -> str:
    message = message_from_bytes(sent.message.as_bytes(), policy=policy.default)
    return message.get_body(("html",)).get_content()


def dispatched_links(served, monkeypatch, channel: str) -> list[str]:
    """The /c/ links of the winback message dispatched to u1 on `channel`."""
    monkeypatch.setenv("NUDGE_SERVE_SECRET", SERVE_SECRET.decode())
    monkeypatch.setenv("NUDGE_SECRET_KEY", LANDING_SECRET.decode())
    with served.store.begin() as connection:
        users = User.__table__
        connection.execute(
            sa.update(users).where(users.c.id == "u1").values(phone="+8613800138000")
        )
    plan_email(served.store, "u1", decision_id=7, channel=channel, variant="standard")
    sink = NoopChannel()
    channels = ChannelSet({channel: sink})
    dispatch_until_idle(served.store, now=NOW, worker_id="w", channels=channels)
    [sent] = sink.sent
    if channel == "email":
        text = html_of(sent)
    else:
        text = json.dumps(sent.body)
    assert "https://shop.example.com/lp/" not in text  # every link goes through /c/
    return sorted(set(re.findall(r"https://go\.example\.com/c/[\w.-]+", text)))


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_dispatched_links_record_the_click_and_lead_where_the_message_would(
    served, monkeypatch, channel
):
    links = dispatched_links(served, monkeypatch, channel)
    assert all(len(link) <= len("https://go.example.com/c/") + 41 for link in links)
    targets = []
    for link in links:
        response = served.get(urlsplit(link).path)
        assert response.status_code == 302
        targets.append(response.headers["location"])
    [landing] = [t for t in targets if t.startswith(f"{SITE}/winback/en/standard.html?")]
    query = dict(parse_qsl(urlsplit(landing).query))
    assert query["utm_source"] == channel and query["utm_campaign"] == RULE
    # The target's token opens the user's own page: their code, their name.
    assert query["utm_content"] == "standard"
    page = served.get(f"{LANDING}?t={query['t']}", headers={"accept-language": "en"})
    assert "Hi Alex!" in page.text
    clicks = [e for e in events_of(served.store, "u1") if e["type"] == f"{channel}_click"]
    assert len(clicks) == len(links)
    click = clicks[targets.index(landing)]
    assert click["properties"]["decision_id"] == 7
    assert click["properties"]["rule_id"] == RULE
    assert click["utm_source"] == channel


def test_dispatched_links_expire_and_refuse_tampering(served, monkeypatch):
    [link, *_] = dispatched_links(served, monkeypatch, "email")
    path = urlsplit(link).path
    payload, signature = path.removeprefix("/c/").split(".")
    assert served.get(f"/c/{payload}.{signature[:-2]}AA").status_code == 400
    other_action = message_link_token(SERVE_SECRET, 999, "landing", expires_at=NOW + timedelta(1))
    assert served.get(f"/c/{other_action}").status_code == 400  # no such message
    served.clock.now = NOW + timedelta(days=90)  # `[serve] link_days`
    assert served.get(path).status_code == 410
    assert [e for e in events_of(served.store) if e["type"] == "email_click"] == []


def test_without_the_serve_secret_links_go_straight_to_their_target(served, monkeypatch):
    monkeypatch.delenv("NUDGE_SERVE_SECRET", raising=False)
    plan_email(served.store, "u1", decision_id=7)
    sink = NoopChannel()
    dispatch_until_idle(served.store, now=NOW, worker_id="w", channels=ChannelSet({"email": sink}))
    [sent] = sink.sent
    html = html_of(sent)
    assert f"{SITE}/winback/en/default.html?" in html
    assert "/c/" not in html


def test_tokens_with_any_characters_are_refused_never_a_500(served, monkeypatch):
    [link, *_] = dispatched_links(served, monkeypatch, "email")
    payload = urlsplit(link).path.removeprefix("/c/").split(".")[0]
    assert served.get(f"/c/{payload}.%C3%A9{'A' * 20}").status_code == 400
    assert served.get("/c/eyJ1IjoidTEifQ.%C3%A9%C3%A9").status_code == 400
    encoded, expiry, signature = token().split(".")
    for bad in (f"{encoded}.{expiry}.%C3%A9", f"{encoded}.0x{expiry}.{signature}"):
        response = served.get(f"{LANDING}?t={bad}", headers={"accept-language": "en"})
        assert response.status_code == 200 and "Hi Alex" not in response.text
    assert [e for e in events_of(served.store) if e["type"] == "landing_view"] == []
