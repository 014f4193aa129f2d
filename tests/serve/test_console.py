"""The read-only operator console of `nudge serve` (/console), through Starlette's
TestClient, on SQLite and PostgreSQL: access (Basic, Bearer, 401, 503, rate limit), what
each page shows, escaping, and that nothing can be written."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import sqlalchemy as sa
from serve_helpers import (
    RULE,
    T0,
    TestClient,  # noqa: I001
    add_user,
    plan_email,
    serve_project,
)

from engine.serve.app import create_app
from engine.serve.safety import TokenBucket
from engine.store import daemons as daemon_rows
from engine.store import open_store
from engine.store.people import Event
from engine.store.planning import Decision, OutboxAction, Run

NOW = T0 + timedelta(hours=1)  # 2026-11-11 11:00 in Asia/Shanghai
TOKEN = "console-test-token"
HOSTILE = "<script>alert(1)</script>"
DEAD_ERROR = "550 5.1.1 <u1@example.com>: mailbox unavailable"
SCHEDULED = "double-eleven"  # cron "0 20 10,11 11 *" in the shop's zone


def basic(password: str = TOKEN, user: str = "ops") -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {credentials}"}


BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def no_tokens_in_environment(monkeypatch):
    # The tests choose the token; the environment of whoever runs them must not.
    for name in ("NUDGE_CONSOLE_TOKEN", "NUDGE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def console_client(settings, store, **options) -> TestClient:
    app = create_app(settings, store=store, now=lambda: NOW, **options)
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def shop(project_dir, store_url):
    """A project with the shipped rules, a user with a hostile name, their events, one
    decision whose email died, a failed run of the schedule rule and a live daemon."""
    settings = serve_project(project_dir, store_url)
    store = open_store(settings)
    add_user(store, "u1", name=HOSTILE, locale="en", member_tier="gold")
    add_events(store)
    decision_id = add_decision(store, "u1")
    plan_email(store, "u1", decision_id=decision_id)
    outbox = OutboxAction.__table__
    with store.begin() as connection:
        connection.execute(
            sa.update(outbox)
            .where(outbox.c.kind == "email")
            .values(state="dead", attempts=5, reason="permanent", last_error=DEAD_ERROR)
        )
        connection.execute(
            sa.insert(Run.__table__),
            {
                "rule_id": SCHEDULED,
                "rule_hash": "h",
                "slot": "2026-11-10T12:00:00+00:00",
                "at": T0 - timedelta(hours=14),
                "mode": "run",
                "status": "failed",
                "counts": {},
                "error": "division by zero in rule <when>",
                "started_at": T0 - timedelta(hours=14),
            },
        )
        daemon_rows.register(connection, NOW - timedelta(seconds=30), tick_seconds=60)
    yield settings, store
    store.dispose()


def add_events(store) -> None:
    base = {"user_id": "u1", "properties": {}, "ingested_at": T0}
    rows = [
        {**base, "source_id": "v1", "type": "visit", "occurred_at": T0 - timedelta(days=2)},
        {
            **base,
            "source_id": "o-1001",
            "type": "purchase",
            "occurred_at": T0 - timedelta(days=1),
            "amount": 199,
            "currency": "CNY",
            "order_id": "1001",
            "utm_campaign": HOSTILE,
        },
    ]
    with store.begin() as connection:
        for row in rows:  # one by one: the rows have different columns
            connection.execute(sa.insert(Event.__table__), row)


def add_decision(store, user_id: str) -> int:
    with store.begin() as connection:
        result = connection.execute(
            sa.insert(Decision.__table__).returning(Decision.__table__.c.id),
            {
                "run_id": 1,
                "rule_id": RULE,
                "user_id": user_id,
                "occurrence_key": "lapsed_member:2026-11-10",
                "outcome": "planned",
                "variant": "standard",
                "decided_at": T0,
            },
        )
        return result.scalar_one()


@pytest.fixture
def console(shop):
    settings, store = shop
    limiter = TokenBucket(capacity=100, rate=0.001)
    with console_client(
        settings, store, console_token=TOKEN.encode(), console_rate_limiter=limiter
    ) as client:
        yield client


# -- access


def test_basic_and_bearer_open_the_console_any_user_name(console):
    for headers in (basic(), basic(user=""), BEARER):
        response = console.get("/console", headers=headers)
        assert response.status_code == 200, headers
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["content-security-policy"]


def test_missing_or_wrong_token_is_401_with_a_basic_challenge(console):
    wrong = [
        {},
        basic("not-the-token"),
        {"authorization": "Bearer not-the-token"},
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},  # no colon
        {"authorization": f"Token {TOKEN}"},
    ]
    for headers in wrong:
        for path in ("/console", "/console/outbox", "/console/users/u1", "/console/report"):
            response = console.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == 'Basic realm="nudge console"'
            assert response.headers["cache-control"] == "no-store"
            assert "winback" not in response.text and "u1@example.com" not in response.text


def test_without_any_token_the_console_is_503_and_says_how_to_enable_it(shop):
    settings, store = shop
    with console_client(settings, store) as client:
        response = client.get("/console", headers=basic())
    assert response.status_code == 503
    assert "NUDGE_CONSOLE_TOKEN" in response.text and "NUDGE_API_TOKEN" in response.text
    assert response.headers["cache-control"] == "no-store"


def test_the_api_token_opens_the_console_when_it_has_no_token_of_its_own(shop, monkeypatch):
    settings, store = shop
    monkeypatch.setenv("NUDGE_API_TOKEN", "api-secret")
    with console_client(settings, store) as client:
        assert client.get("/console", headers=basic("api-secret")).status_code == 200
    monkeypatch.setenv("NUDGE_CONSOLE_TOKEN", "console-secret")
    with console_client(settings, store) as client:
        assert client.get("/console", headers=basic("api-secret")).status_code == 401
        assert client.get("/console", headers=basic("console-secret")).status_code == 200


def test_failed_attempts_are_rate_limited_even_for_a_right_guess_after(shop):
    settings, store = shop
    limiter = TokenBucket(capacity=10, rate=0.001)
    options = {"console_token": TOKEN.encode(), "console_rate_limiter": limiter}
    with console_client(settings, store, **options) as client:
        # Each wrong token costs five: the second one empties the bucket.
        assert client.get("/console", headers=basic("guess-1")).status_code == 401
        assert client.get("/console", headers=basic("guess-2")).status_code == 401
        response = client.get("/console", headers=basic())
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1


def test_no_write_route_exists(console):
    for path in ("/console", "/console/outbox", "/console/users/u1", "/console/report"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = console.request(method, path, headers=BEARER)
            assert response.status_code == 405, (method, path)


# -- pages


def test_rules_page_shows_status_trigger_next_fire_last_run_and_daemons(console):
    response = console.get("/console", headers=BEARER)
    assert response.status_code == 200
    text = response.text
    assert 'id="rule-double-eleven"' in text
    assert RULE in text and "active" in text
    assert "schedule: 0 20 10,11 11 *" in text
    # The next slot after 11:00 on 11 November, shop time, to the second.
    assert "2026-11-11 20:00:00+08:00" in text
    # The last (failed) run of the schedule rule, its error escaped.
    assert "2026-11-10 20:00:00+08:00" in text
    assert "division by zero in rule &lt;when&gt;" in text
    # The daemon's heartbeat, in the shop's zone.
    assert "2026-11-11 10:59:30+08:00" in text and "running" in text
    assert ".000" not in text and "+00:00" not in text


def test_outbox_page_shows_counts_and_dead_actions_with_their_errors(console):
    response = console.get("/console/outbox", headers=basic())
    assert response.status_code == 200
    text = response.text
    assert "<dt>planned</dt><dd>1</dd>" in text and "<dt>dead</dt><dd>1</dd>" in text
    assert "550 5.1.1 &lt;u1@example.com&gt;: mailbox unavailable" in text
    assert "permanent" in text
    assert 'href="/console/users/u1"' in text
    assert "Nothing is being retried." in text


def test_outbox_page_lists_retrying_actions(console):
    outbox = OutboxAction.__table__
    with console.app.state.store.begin() as connection:
        connection.execute(
            sa.update(outbox)
            .where(outbox.c.kind == "coupon")
            .values(attempts=2, reason="retrying", last_error="timeout talking to the coupon API")
        )
    text = console.get("/console/outbox", headers=BEARER).text
    assert "timeout talking to the coupon API" in text
    assert "2026-11-11 10:00:00+08:00" in text  # its next attempt, shop time


def test_user_page_shows_events_and_decisions_escaped(console):
    response = console.get("/console/users/u1", headers=BEARER)
    assert response.status_code == 200
    text = response.text
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the name and the campaign
    assert "<script" not in text
    # The timeline: both events, newest first, in the shop's zone.
    assert text.index("purchase") < text.index("visit")
    assert "2026-11-10 10:00:00+08:00" in text and "199" in text and "1001" in text
    # The decision and what became of its actions.
    assert RULE in text and "planned" in text and "standard" in text
    assert "lapsed_member:2026-11-10" in text
    assert "mailbox unavailable" in text
    # The explain form lists the rules.
    assert f'<option value="{RULE}">' in text


def test_user_page_explains_one_rule_as_nudge_explain_does(console):
    response = console.get(f"/console/users/u1?rule={RULE}", headers=BEARER)
    assert response.status_code == 200
    text = response.text
    assert f"u1 / {RULE} at 2026-11-11 11:00:00+08:00" in text
    assert "verdict: not_matched" in text and "trigger: stage lapsed_member" in text
    assert "(member_tier = gold)" in text
    assert "cap: 1 of 1 used -&gt; capped" in text
    assert "history: 2026-11-11 10:00:00+08:00 planned" in text
    assert f'<option value="{RULE}" selected>' in text
    # Explaining changed nothing.
    outbox = OutboxAction.__table__
    with console.app.state.store.read() as connection:
        states = connection.execute(sa.select(outbox.c.kind, outbox.c.state)).all()
    assert sorted(states) == [("coupon", "planned"), ("email", "dead")]


def test_user_page_with_an_unknown_rule_still_shows_the_user(console):
    response = console.get("/console/users/u1?rule=winback-lapsed", headers=BEARER)
    assert response.status_code == 200
    assert "did you mean &#39;winback-lapsed-members&#39;?" in response.text
    assert "Timeline" in response.text


def test_pages_only_read_the_database(console, monkeypatch):
    store = console.app.state.store

    def refuse(*args, **kwargs):
        raise AssertionError("a console page opened a writing connection")

    monkeypatch.setattr(store, "begin", refuse)
    monkeypatch.setattr(store, "connect", refuse)
    for path in ("/console", "/console/outbox", "/console/users/u1", "/console/report"):
        assert console.get(path, headers=BEARER).status_code == 200, path


def test_user_search_form_redirects_to_the_user(console):
    page = console.get("/console", headers=BEARER).text
    assert '<form class="search" method="get" action="/console/users"' in page
    response = console.get("/console/users", params={"id": " u1 "}, headers=BEARER)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/users/u1"
    odd = console.get("/console/users", params={"id": "a/b?c"}, headers=BEARER)
    assert odd.headers["location"] == "/console/users/a%2Fb%3Fc"
    assert console.get("/console/users", headers=BEARER).headers["location"] == "/console"


def test_unknown_user_is_404_with_a_suggestion(console):
    response = console.get("/console/users/u11", headers=BEARER)
    assert response.status_code == 404
    assert "no user &#39;u11&#39; (did you mean &#39;u1&#39;?)" in response.text
    assert response.headers["cache-control"] == "no-store"


def test_report_page_renders_the_measurement_report(console):
    response = console.get("/console/report", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    assert "Test Shop: marketing report" in text
    assert RULE in text
    assert "<script" not in text


def test_report_page_says_when_there_is_nothing_to_report(project_dir, store_url):
    settings = serve_project(project_dir, store_url)
    store = open_store(settings)
    try:
        with console_client(settings, store, console_token=TOKEN.encode()) as client:
            response = client.get("/console/report", headers=BEARER)
    finally:
        store.dispose()
    assert response.status_code == 200
    assert "nothing to report" in response.text
    assert "2026-10-12 11:00:00+08:00" in response.text  # the 30-day window, shop time
