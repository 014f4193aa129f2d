"""The event API (`POST /v1/events`, `POST /v1/users`, `GET /openapi.json`) through
Starlette's TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from serve_helpers import (  # noqa: I001
    CODE,
    T0,
    TestClient,
    add_coupon,
    add_user,
    events_of,
    serve_project,
)

from engine.ingest.money import ShopCurrency
from engine.ingest.records import event_row
from engine.ingest.values import RowError
from engine.serve.api import API_TOKEN_ENV, MAX_BATCH
from engine.serve.app import create_app
from engine.serve.safety import TokenBucket
from engine.store import open_store
from engine.store.changes import data_version
from engine.store.delivery import Coupon
from engine.store.people import Event, User, UserTag
from engine.store.planning import ChangeCounter

NOW = T0 + timedelta(hours=1)
TOKEN = "api-test-token"
TOKEN_BYTES = TOKEN.encode()
AUTH = {"authorization": f"Bearer {TOKEN}"}


def seed_counter(store) -> None:
    """The counter row migration 0003 inserts (conftest's PostgreSQL TRUNCATE empties it)."""
    counters = ChangeCounter.__table__
    with store.begin() as connection:
        if not connection.execute(sa.select(counters.c.name)).first():
            connection.execute(counters.insert(), {"name": "data", "version": 0})


def make_client(project_dir, store_url, *, token=TOKEN_BYTES, limiter=None):
    settings = serve_project(project_dir, store_url)
    store = open_store(settings)
    seed_counter(store)
    app = create_app(
        settings,
        store=store,
        secret=b"s",
        landing_secret=b"l",
        now=lambda: NOW,
        api_token=token,
        api_rate_limiter=limiter or TokenBucket(capacity=1000, rate=1000),
    )
    client = TestClient(app)
    client.store = store
    return client


@pytest.fixture
def api(project_dir, store_url):
    client = make_client(project_dir, store_url)
    with client:
        add_user(client.store, "u1")
        yield client
    client.store.dispose()


def event(event_id="e1", user="u1", **fields):
    return {"id": event_id, "user": user, "type": "visit", "at": "2026-11-11T10:00:00", **fields}


def version(store) -> int:
    with store.read() as connection:
        return data_version(connection)


def test_one_event_is_stored_and_wakes_the_daemons(api):
    before = version(api.store)
    response = api.post("/v1/events", json=event(page="/sale"), headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "stored": 1,
        "duplicate": 0,
        "rejected": 0,
        "results": [{"index": 0, "status": "stored", "reason": None}],
    }
    rows = events_of(api.store, "u1")
    assert [(r["source_id"], r["type"], r["properties"]) for r in rows] == [
        ("e1", "visit", {"page": "/sale"})
    ]
    assert rows[0]["occurred_at"] == T0  # 10:00 shop time (Asia/Shanghai)
    assert version(api.store) == before + 1


def test_batch_of_good_duplicate_and_rejected_items(api):
    api.post("/v1/events", json=event("old"), headers=AUTH)
    bad = {"user": "u1", "type": "purchase", "at": "2026-11-11T10:00:00"}
    with pytest.raises(RowError) as expected:
        event_row(bad, api.store.settings.tz, ShopCurrency.of(api.store.settings))
    batch = [event("new"), event("old"), bad, event("new"), "nope", event("n2", user="fresh")]
    response = api.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert [(r["index"], r["status"]) for r in body["results"]] == [
        (0, "stored"),
        (1, "duplicate"),
        (2, "rejected"),
        (3, "duplicate"),
        (4, "rejected"),
        (5, "stored"),
    ]
    assert body["results"][2]["reason"] == str(expected.value)
    assert "amount" in body["results"][2]["reason"]
    assert (body["stored"], body["duplicate"], body["rejected"]) == (2, 2, 2)
    assert sorted(r["source_id"] for r in events_of(api.store)) == ["n2", "new", "old"]
    # An unknown user is created, as file ingest does by default.
    with api.store.read() as connection:
        assert connection.execute(sa.select(User.id).where(User.id == "fresh")).scalar()


def test_reposting_stores_nothing_twice(api):
    batch = [event("a"), event("b", type="purchase", amount="12.50")]
    first = api.post("/v1/events", json=batch, headers=AUTH).json()
    before = version(api.store)
    again = api.post("/v1/events", json=batch, headers=AUTH).json()
    assert first["stored"] == 2
    assert (again["stored"], again["duplicate"]) == (0, 2)
    assert len(events_of(api.store)) == 2
    assert version(api.store) == before  # nothing new: the daemons sleep on


def test_users_endpoint_upserts(api):
    before = version(api.store)
    users = [
        {"id": "u9", "email": "u9@example.com", "tags": ["vip"], "plan": "pro"},
        {"email": "no-id@example.com"},
        {"id": "u1", "name": "Alex"},
    ]
    response = api.post("/v1/users", json=users, headers=AUTH)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["stored", "rejected", "stored"]
    assert results[1]["reason"] == "missing required field 'id'"
    with api.store.read() as connection:
        u9 = connection.execute(sa.select(User).where(User.id == "u9")).one()
        tags = connection.execute(sa.select(UserTag.tag).where(UserTag.user_id == "u9")).all()
        name = connection.execute(sa.select(User.name).where(User.id == "u1")).scalar()
    assert u9.email == "u9@example.com" and u9.attributes == {"plan": "pro"}
    assert [t.tag for t in tags] == ["vip"]
    assert name == "Alex"
    assert version(api.store) == before + 1
    one = api.post("/v1/users", json={"id": "u9", "phone": "+15550100"}, headers=AUTH)
    assert one.json()["results"] == [{"index": 0, "status": "stored", "reason": None}]


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}]
)
def test_missing_or_wrong_token_is_401(api, headers):
    for path in ("/v1/events", "/v1/users"):
        response = api.post(path, json=event(), headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert events_of(api.store) == []


def test_no_token_configured_is_503(project_dir, store_url, monkeypatch):
    monkeypatch.delenv(API_TOKEN_ENV, raising=False)
    client = make_client(project_dir, store_url, token=None)
    with client:
        response = client.post("/v1/events", json=event(), headers=AUTH)
        assert response.status_code == 503
        assert response.json() == {"error": "API disabled: set NUDGE_API_TOKEN"}
    client.store.dispose()


def test_token_from_the_environment(project_dir, store_url, monkeypatch):
    monkeypatch.setenv(API_TOKEN_ENV, "from-env")
    client = make_client(project_dir, store_url, token=None)
    with client:
        add_user(client.store, "u1")
        ok = client.post("/v1/events", json=event(), headers={"authorization": "Bearer from-env"})
        assert ok.status_code == 200
    client.store.dispose()


def test_oversized_batch_is_413(api):
    batch = [event(f"e{i}") for i in range(MAX_BATCH + 1)]
    response = api.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 413
    assert response.json() == {"error": f"batch of 1001 items: at most {MAX_BATCH} per request"}
    assert events_of(api.store) == []


def test_full_batch_fits_the_body_limit_which_is_still_enforced(api):
    batch = [event(f"e{i}", page="/p" * 20) for i in range(MAX_BATCH)]
    response = api.post("/v1/events", json=batch, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["stored"] == MAX_BATCH
    huge = json.dumps([event(properties={"x": "y" * 3_000_000})])
    response = api.post(
        "/v1/events", content=huge, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 413
    # Other routes keep the small limit.
    assert api.post("/u/anything", content=b"x" * 20_000).status_code == 413


def test_bad_json_is_400(api):
    response = api.post("/v1/events", content=b"{nope", headers=AUTH)
    assert response.status_code == 400
    response = api.post("/v1/events", json="a string", headers=AUTH)
    assert response.status_code == 400


def test_rate_limit_is_429(project_dir, store_url):
    client = make_client(project_dir, store_url, limiter=TokenBucket(capacity=2, rate=0.001))
    with client:
        add_user(client.store, "u1")
        codes = [
            client.post("/v1/events", json=event(), headers=AUTH).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        limited = client.post("/v1/users", json={"id": "u1"}, headers=AUTH)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
    client.store.dispose()


def test_openapi_document(api):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.text)
    assert document["openapi"].startswith("3.1")
    assert {"/v1/events", "/v1/users", "/healthz"} <= set(document["paths"])
    responses = document["paths"]["/v1/events"]["post"]["responses"]
    assert {"200", "401", "413", "429"} <= set(responses)
    assert set(document["components"]["schemas"]["Result"]["properties"]) == {
        "index",
        "status",
        "reason",
    }


def test_purchase_with_a_coupon_code_redeems_it(api):
    add_coupon(api.store, "u1")
    purchase = event("o1", type="purchase", amount=150, order_id="A-1", coupon_code=CODE)
    assert api.post("/v1/events", json=purchase, headers=AUTH).json()["stored"] == 1
    with api.store.read() as connection:
        coupon = connection.execute(sa.select(Coupon).where(Coupon.code == CODE)).one()
    assert coupon.redeemed_order_id == "A-1"


def wait_for_a_lock_wait(store, *, timeout: float = 10.0) -> None:
    """Polls PostgreSQL until some session of this database waits on a lock."""
    deadline = time.monotonic() + timeout
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with store.read() as connection:
            if connection.execute(query).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("the API's insert never waited on the other transaction's row")


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_an_event_a_concurrent_writer_stores_first_is_a_duplicate(project_dir, store_url):
    """Regression: on PostgreSQL the duplicate check (a SELECT) cannot see an insert not
    yet committed; the API's INSERT ... ON CONFLICT DO NOTHING then waits for it and
    skips the row, and the API answered `stored` for an event it did not store."""
    client = make_client(project_dir, store_url)
    store = client.store
    with client:
        add_user(store, "u1")
        settings = store.settings
        row = event_row(event("race"), settings.tz, ShopCurrency.of(settings))
        with store.engine.connect() as other, ThreadPoolExecutor(1) as pool:
            transaction = other.begin()
            other.execute(sa.insert(Event.__table__), {**row, "ingested_at": NOW})
            posted = pool.submit(client.post, "/v1/events", json=event("race"), headers=AUTH)
            wait_for_a_lock_wait(store)
            transaction.commit()
            response = posted.result(timeout=30)
        assert response.status_code == 200
        assert response.json()["results"] == [
            {"index": 0, "status": "duplicate", "reason": "already stored"}
        ]
        assert [r["source_id"] for r in events_of(store)] == ["race"]
    store.dispose()


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_batch_that_deadlocks_with_a_concurrent_writer_is_retried(project_dir, store_url):
    """Regression: the batch's COPY (the PostgreSQL fast path) raised psycopg's own
    DeadlockDetected, which the API's retry (it reads SQLAlchemy's DBAPIError) let through
    as a 500. Here the batch holds `a` and waits for `b`, which another transaction holds
    and which then waits for `a`: PostgreSQL aborts the batch's transaction (the other one
    waits longer before it checks), and the retried batch finds both events stored."""
    client = make_client(project_dir, store_url)
    store = client.store
    with client:
        add_user(store, "u1")
        add_user(store, "u2")
        settings = store.settings
        rows = {
            name: event_row(event(name, user), settings.tz, ShopCurrency.of(settings))
            for name, user in (("a", "u1"), ("b", "u2"))
        }
        batch = [event("a", "u1"), event("b", "u2")]
        with store.engine.connect() as other, ThreadPoolExecutor(1) as pool:
            transaction = other.begin()
            other.exec_driver_sql("SET LOCAL deadlock_timeout = '60s'")
            other.execute(sa.insert(Event.__table__), {**rows["b"], "ingested_at": NOW})
            posted = pool.submit(client.post, "/v1/events", json=batch, headers=AUTH)
            wait_for_a_lock_wait(store)
            # Waits for the batch's `a` until PostgreSQL ends the batch's transaction.
            other.execute(sa.insert(Event.__table__), {**rows["a"], "ingested_at": NOW})
            transaction.commit()
            response = posted.result(timeout=30)
        assert response.status_code == 200
        assert [r["status"] for r in response.json()["results"]] == ["duplicate", "duplicate"]
        assert sorted(r["source_id"] for r in events_of(store)) == ["a", "b"]
    store.dispose()
