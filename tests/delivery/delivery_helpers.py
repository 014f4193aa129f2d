"""Helpers for delivery tests: users and outbox rows inserted directly with Core.

Imported by name (tests/ has no packages); the name is unique across test folders.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.store.people import User
from engine.store.planning import OutboxAction

T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


class Clock:
    """An injected clock for the dispatcher (`clock=`): `clock()` is the current instant,
    which only moves when a test calls advance() (e.g. inside a channel call, to play a
    slow endpoint without sleeping). Safe to read from a sink's thread."""

    def __init__(self, start: datetime = T0):
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def advance(self, delta: timedelta) -> datetime:
        with self.lock:
            self.now += delta
            return self.now


def add_users(store, *users: dict[str, Any]) -> None:
    rows = []
    for user in users:
        row = {
            "email": f"{user['id']}@example.com",
            "phone": "+86 138 0013 8000",
            "email_opt_in": True,
            "sms_opt_in": True,
            "ads_opt_in": True,
            "attributes": {},
            "created_at": T0,
            "updated_at": T0,
        }
        row.update(user)
        rows.append(row)
    # executemany takes its columns from the first row: give every row every key.
    keys = set().union(*rows)
    rows = [{key: row.get(key) for key in keys} for row in rows]
    with store.begin() as connection:
        connection.execute(sa.insert(User.__table__), rows)


_counter = iter(range(1, 10**9))


def plan(
    store,
    kind: str,
    user_id: str,
    payload: dict[str, Any] | None = None,
    *,
    rule_id: str = "winback",
    priority: int = 0,
    at: datetime = T0,
    decision_id: int | None = None,
    channel: str | None = None,
    key: str | None = None,
) -> int:
    """Insert one planned outbox row; returns its id."""
    n = next(_counter)
    decision = decision_id if decision_id is not None else n
    key = key or hashlib.sha256(f"{rule_id}:{user_id}:{decision}:{kind}:{n}".encode()).hexdigest()
    row = {
        "idempotency_key": key[:64],
        "decision_id": decision,
        "run_id": 1,
        "rule_id": rule_id,
        "user_id": user_id,
        "kind": kind,
        "channel": channel or kind,
        "priority": priority,
        "payload": payload or {},
        "state": "planned",
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
        "updated_at": at,
    }
    with store.begin() as connection:
        return connection.execute(
            sa.insert(OutboxAction.__table__).returning(OutboxAction.__table__.c.id), row
        ).scalar_one()


COUPON = {"value": 20, "expires_in": "14d"}


def plan_with_offer(
    store,
    kind: str,
    user_id: str,
    payload: dict[str, Any] | None = None,
    *,
    coupon: dict[str, Any] | None = None,
    decision_id: int | None = None,
    **kw: Any,
) -> int:
    """Plan a message of a coupon creative the way the planner does: the decision's coupon
    action (same decision, rule, priority, time and send window), then the message.

    The email/SMS finds its offer through the coupon action of its decision; without one
    the creative's discount block aborts. Returns the message's id (the coupon row is
    inserted first, so it comes just before the message in id order).
    """
    decision = decision_id if decision_id is not None else next(_counter)
    coupon_payload = dict(coupon or COUPON)
    if payload and "send_window" in payload:  # the planner puts it on every action
        coupon_payload["send_window"] = payload["send_window"]
    shared = {name: kw[name] for name in ("rule_id", "priority", "at") if name in kw}
    plan(store, "coupon", user_id, coupon_payload, decision_id=decision, **shared)
    return plan(store, kind, user_id, payload, decision_id=decision, **kw)


def outbox_rows(store) -> list[dict[str, Any]]:
    table = OutboxAction.__table__
    with store.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(table).order_by(table.c.id))]


REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def with_delivery(store, **delivery):
    """The same store with settings.delivery replaced (nudge.toml [delivery]) and the
    repository's example creatives as templates."""
    from engine.store import Store

    rules = store.settings.rules.model_copy(update={"templates": str(REPO_TEMPLATES)})
    settings = store.settings.model_copy(update={"delivery": delivery, "rules": rules})
    return Store(engine=store.engine, settings=settings)


def smtp_store(store, sink, email=None, **delivery):
    """The same store sending email over SMTP to `sink` (a sinks.SmtpSink), with more
    `[delivery.email]` settings in `email` and other `[delivery]` sections."""
    return with_delivery(
        store,
        email={
            "backend": "smtp",
            "host": "127.0.0.1",
            "port": sink.port,
            "from_address": "hello@shop.example.com",
            "unsubscribe_url": "https://shop.example.com/u/{token}",
            **(email or {}),
        },
        **delivery,
    )
