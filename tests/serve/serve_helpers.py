"""Helpers of the `nudge serve` tests: a project with the shipped rules and creatives,
users, coupons and planned emails inserted directly (imported by name; unique)."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import make_settings

from engine.coupons.codes import normalise_code
from engine.store.delivery import Coupon
from engine.store.people import Event, User
from engine.store.planning import OutboxAction

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` in its TestClient; the `httpx` we have works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["TestClient"]

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
RULE = "winback-lapsed-members"
SERVE_SECRET = b"serve-test-secret"
LANDING_SECRET = b"landing-test-secret"
CODE = "WB-TEST-0001"


def serve_project(project_dir: Path, store_url: str, **serve: Any):
    """Settings of a project with the repository's rules and templates; the winback
    landing page (en) greets the user by first name."""
    rules = project_dir / "rules"
    rules.mkdir(exist_ok=True)
    for path in (REPO / "rules").glob("*.yaml"):
        shutil.copy(path, rules / path.name)
    shutil.copytree(REPO / "templates", project_dir / "templates", dirs_exist_ok=True)
    page = project_dir / "templates" / "winback" / "landing.en.html"
    page.write_text(
        page.read_text(encoding="utf-8").replace(
            "{% block intro %}",
            '{% block intro %}{% if user.first_name %}<span class="hello">Hi '
            "{{ user.first_name }}!</span> {% endif %}",
        ),
        encoding="utf-8",
    )
    return make_settings(
        project_dir,
        shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
        database={"url": store_url},
        delivery={"base_url": "https://shop.example.com/lp"},
        serve={"base_url": "https://go.example.com", **serve},
    )


def add_user(store, user_id: str, **fields: Any) -> None:
    row = {
        "id": user_id,
        "email": f"{user_id}@example.com",
        "email_opt_in": True,
        "sms_opt_in": True,
        "ads_opt_in": True,
        "attributes": {},
        "created_at": T0,
        "updated_at": T0,
        **fields,
    }
    with store.begin() as connection:
        connection.execute(sa.insert(User.__table__), row)


def add_coupon(store, user_id: str, code: str = CODE, *, rule_id: str = RULE, **fields) -> None:
    row = {
        "code": code,
        "code_key": normalise_code(code),
        "user_id": user_id,
        "rule_id": rule_id,
        "idempotency_key": hashlib.sha256(code.encode()).hexdigest()[:64],
        "value": 20,
        "currency": "CNY",
        "min_order": 100,
        "issued_at": T0,
        "expires_at": T0 + timedelta(days=14),
        **fields,
    }
    with store.begin() as connection:
        connection.execute(sa.insert(Coupon.__table__), row)


def plan_email(
    store,
    user_id: str,
    *,
    decision_id: int,
    creative: str = "winback",
    channel: str = "email",
    variant: str | None = None,
) -> None:
    """A planned coupon + email (or SMS) of one decision, as the planner writes them."""
    for kind, payload in (
        ("coupon", {"value": 20, "expires_in": "14d"}),
        (channel, {"creative": creative}),
    ):
        key = hashlib.sha256(f"{RULE}:{user_id}:{decision_id}:{kind}".encode()).hexdigest()
        row = {
            "idempotency_key": key[:64],
            "decision_id": decision_id,
            "run_id": 1,
            "rule_id": RULE,
            "user_id": user_id,
            "kind": kind,
            "channel": kind,
            "variant": variant,
            "priority": 0,
            "payload": payload,
            "state": "planned",
            "attempts": 0,
            "next_attempt_at": T0,
            "created_at": T0,
            "updated_at": T0,
        }
        with store.begin() as connection:
            connection.execute(sa.insert(OutboxAction.__table__), row)


def events_of(store, user_id: str | None = None) -> list[dict[str, Any]]:
    table = Event.__table__
    query = sa.select(table).order_by(table.c.id)
    if user_id is not None:
        query = query.where(table.c.user_id == user_id)
    with store.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]


def outbox_states(store) -> list[tuple[str, str, str, str | None]]:
    table = OutboxAction.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(table).order_by(table.c.id)).all()
    return [(r.user_id, r.kind, r.state, r.reason) for r in rows]
