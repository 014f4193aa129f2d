"""Schemathesis fuzzing of the event API against its own `/openapi.json`, in-process.

The app is the real one (`create_app`) on a real store; schemathesis loads the document
the app serves and calls the app through ASGI, with the bearer token. Every response
must be a documented status code with a body that matches its documented schema, never
a 5xx, and a 200 must keep the per-item contract of docs/serve.md ("Event API"): one
result per item, in order, counts that add up, what was `stored` actually in the store,
and a re-post storing nothing twice.

Bounded and deterministic: a fixed number of examples per operation and mode, derived
from the test's name (`derandomize`), no example database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import T0, serve_project

from engine.serve.app import create_app
from engine.serve.safety import TokenBucket
from engine.store import open_store
from engine.store.people import Event, User
from engine.store.planning import ChangeCounter

NOW = T0 + timedelta(hours=1)
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 20  # per operation and mode: bounded, so the file takes seconds, not minutes
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def seed_counter(store) -> None:
    """The counter row migration 0003 inserts (conftest's PostgreSQL TRUNCATE empties it)."""
    counters = ChangeCounter.__table__
    with store.begin() as connection:
        if not connection.execute(sa.select(counters.c.name)).first():
            connection.execute(counters.insert(), {"name": "data", "version": 0})


@pytest.fixture
def fuzzed(project_dir, store_url):
    settings_ = serve_project(project_dir, store_url)
    store = open_store(settings_)
    seed_counter(store)
    app = create_app(
        settings_,
        store=store,
        secret=b"s",
        landing_secret=b"l",
        now=lambda: NOW,
        api_token=TOKEN.encode(),
        # The fuzzer is one client sending hundreds of requests: no 429 in the way.
        api_rate_limiter=TokenBucket(capacity=10**9, rate=10**9),
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema, store
    store.dispose()


def count(store, table) -> int:
    with store.read() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def items_of(body: Any) -> list[Any]:
    return [body] if isinstance(body, dict) else list(body)


def check_contract(case, response, store, before: int) -> None:
    """The per-item contract of a 200 (docs/serve.md, Event API)."""
    body = response.json()
    items = items_of(case.body)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    statuses = [r["status"] for r in results]
    assert (body["stored"], body["duplicate"], body["rejected"]) == (
        statuses.count("stored"),
        statuses.count("duplicate"),
        statuses.count("rejected"),
    )
    for item, result in zip(items, results, strict=True):
        if result["status"] == "stored":
            assert result["reason"] is None
        else:
            assert isinstance(result["reason"], str) and result["reason"]
        if not isinstance(item, dict):
            assert result["status"] == "rejected"
    if case.path == "/v1/events":
        # What the server said it stored is what the table gained, no more, no less.
        assert count(store, Event.__table__) == before + body["stored"]
    else:
        assert all(r["status"] != "duplicate" for r in results)  # users are upserts
        stored = [item for item, r in zip(items, results, strict=True) if r["status"] == "stored"]
        stored_ids = {str(item["id"]).strip() for item in stored}
        with store.read() as connection:
            found = connection.execute(sa.select(User.id).where(User.id.in_(stored_ids)))
            assert {row.id for row in found} == stored_ids


def check_repost(case, first: dict, store, auth: dict) -> None:
    """Posting the same events again stores nothing: stored and duplicate items come back
    duplicate, rejected ones rejected with the same reason."""
    before = count(store, Event.__table__)
    again = case.call(headers=auth)
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["stored"] == 0
    for old, new in zip(first["results"], body["results"], strict=True):
        if old["status"] == "rejected":
            assert new == old
        else:
            assert new["status"] == "duplicate"
    assert count(store, Event.__table__) == before


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        ("POST", "/v1/events", "positive"),
        ("POST", "/v1/events", "negative"),
        ("POST", "/v1/users", "positive"),
        ("POST", "/v1/users", "negative"),
        ("GET", "/healthz", "positive"),
    ],
)
def test_event_api_fuzz(fuzzed, method, path, mode):
    """Positive cases follow the document; negative ones break it (a body that is not
    JSON, items of the wrong shape, no or a wrong token): both must get documented
    answers."""
    schema, store = fuzzed
    operation = schema[path][method]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case):
        before = count(store, Event.__table__)
        response = case.call(headers=AUTH)
        case.validate_response(response, checks=CHECKS, headers=AUTH)
        if response.status_code == 200 and path != "/healthz":
            check_contract(case, response, store, before)
            if path == "/v1/events":
                check_repost(case, response.json(), store, AUTH)
        else:
            # A refused request stores nothing.
            assert count(store, Event.__table__) == before, response.text

    fuzz()
