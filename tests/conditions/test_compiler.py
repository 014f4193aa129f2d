"""Compiled conditions on a real store: the same users on SQLite and PostgreSQL.

One small shop, evaluated at a fixed T, with users chosen to sit on every boundary
(exactly 90 days, an event exactly 7 days ago, an event after T, missing values).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from engine.conditions import (
    Catalog,
    CompileContext,
    check_condition,
    check_segments,
    compile_condition,
    compile_explain,
    explain_query,
    matching_users,
)
from engine.store.people import Event, User, UserTag
from engine.store.planning import Decision, OutboxAction
from engine.store.profiles import refresh_profiles

T = datetime(2026, 11, 11, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ALL = {"u1", "u2", "u3", "u4", "u5"}
SEGMENT_TEXTS = {
    "lapsed_gold": 'member_tier == "gold" and days_since(last_purchase_at) > 60',
    "reachable_lapsed_gold": 'in_segment("lapsed_gold") and email_opt_in',
}

USERS = [
    {
        "id": "u1",
        "member_tier": "gold",
        "email_opt_in": True,
        "phone": "+8613800000000",
        "member_since": T - 400 * DAY,
        "attributes": {"vip_score": 5, "city": "Paris", "newsletter": True},
    },
    {"id": "u2", "member_tier": "silver", "phone": "", "attributes": {"vip_score": "5"}},
    {"id": "u3", "attributes": {}},
    {"id": "u4", "member_tier": "gold", "attributes": {"vip_score": 2.5, "newsletter": False}},
    {"id": "u5", "member_tier": "platinum", "attributes": {"vip_score": None}},
]
EVENTS = [
    ("u1", "purchase", T - 95 * DAY, "300.00", {}),
    ("u1", "purchase", T - 200 * DAY, "100.00", {}),
    ("u1", "visit", T - 2 * DAY, None, {}),
    ("u1", "visit", T - 3 * DAY, None, {}),
    ("u2", "purchase", T - 30 * DAY, "50.00", {}),
    ("u2", "refund", T - 10 * DAY, "20.00", {}),
    ("u2", "visit", T + DAY, None, {}),  # after T: invisible at T (invariant 5)
    ("u4", "purchase", T - 90 * DAY, "80.00", {"sku": "A1"}),  # exactly 90 days
    ("u4", "visit", T - 7 * DAY, None, {}),  # exactly 7 days: outside within=7d
    ("u4", "visit", T, None, {}),  # exactly T: inside
    ("u5", "signup", T - timedelta(hours=1), None, {}),
]
USER_DEFAULTS = {
    "email_opt_in": False,
    "phone": None,
    "member_tier": None,
    "member_since": None,
    "created_at": T,
    "updated_at": T,
}
# (user, rule, outcome, decided at, the state of its email action or None)
DECISIONS = [
    ("u1", "welcome-email", "planned", T - 13 * DAY, "sent"),
    ("u2", "welcome-email", "planned", T - 15 * DAY, "planned"),
    # Planned, but the email was skipped (unsubscribed): not received.
    ("u3", "welcome-email", "planned", T - 2 * DAY, "skipped"),
    ("u4", "welcome-email", "held_out", T - DAY, None),
    ("u5", "welcome-email", "planned", T + timedelta(hours=1), "sent"),
]


@pytest.fixture
def shop(store):
    with store.begin() as connection:
        connection.execute(
            sa.insert(User.__table__),
            [{**USER_DEFAULTS, **user} for user in USERS],
        )
        connection.execute(
            sa.insert(Event.__table__),
            [
                {
                    "source_id": f"e{i}",
                    "user_id": user,
                    "type": kind,
                    "occurred_at": at,
                    "amount": Decimal(amount) if amount else None,
                    "properties": properties,
                    "ingested_at": T,
                }
                for i, (user, kind, at, amount, properties) in enumerate(EVENTS)
            ],
        )
        connection.execute(sa.insert(UserTag.__table__), [{"user_id": "u1", "tag": "wholesale"}])
        connection.execute(
            sa.insert(Decision.__table__),
            [
                {
                    "run_id": 1,
                    "rule_id": rule,
                    "user_id": user,
                    "occurrence_key": f"k{i}",
                    "outcome": outcome,
                    "decided_at": at,
                }
                for i, (user, rule, outcome, at, _) in enumerate(DECISIONS)
            ],
        )
        connection.execute(
            sa.insert(OutboxAction.__table__),
            [
                {
                    "idempotency_key": f"k{i}:email",
                    "decision_id": i + 1,
                    "run_id": 1,
                    "rule_id": rule,
                    "user_id": user,
                    "kind": "email",
                    "channel": "email",
                    "payload": {},
                    "state": state,
                    "attempts": 0,
                    "next_attempt_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
                for i, (user, rule, _, at, state) in enumerate(DECISIONS)
                if state is not None
            ],
        )
        refresh_profiles(connection, None, T + 2 * DAY)
    return store


def _matching(store, text: str, *, now: datetime = T, trigger: str = "schedule") -> set[str]:
    segments = check_segments(SEGMENT_TEXTS)
    catalog = Catalog.for_trigger(trigger, segments=segments)
    expr = check_condition(text, catalog=catalog)
    with store.connect() as connection:
        event = Event.__table__.alias("trigger_event") if trigger == "event" else None
        ctx = CompileContext.for_connection(
            connection, store.settings, now, event=event, segments=segments
        )
        return set(connection.execute(matching_users(expr, ctx)).scalars())


CASES = [
    ("total_spent >= 200", {"u1"}),
    ("total_spent >= 30", {"u1", "u2", "u4"}),
    ("total_spent == 0", {"u3", "u5"}),  # no events at all still means 0 spent
    ("not total_spent >= 200", ALL - {"u1"}),
    ("avg_order_value > 100", {"u1"}),
    ("not avg_order_value > 100", ALL - {"u1"}),  # missing average: comparison false
    ("event_count >= 3", {"u1", "u4"}),
    ("purchase_count == 1 or refund_count >= 1", {"u2", "u4"}),
    ('member_tier in ["gold", "silver"]', {"u1", "u2", "u4"}),
    ('member_tier not in ["gold"]', {"u2", "u5"}),  # u3 has no tier: false
    ('not member_tier in ["gold"]', {"u2", "u3", "u5"}),  # ... and not(false) is true
    ('member_tier != "gold"', {"u2", "u5"}),
    ('not member_tier == "gold"', {"u2", "u3", "u5"}),
    ("member_tier in []", set()),
    ("days_since(last_purchase_at) >= 90", {"u1", "u4"}),  # exactly 90 days counts
    ("days_since(last_purchase_at) > 90", {"u1"}),
    ("90 < days_since(last_purchase_at)", {"u1"}),
    ("30 <= days_since(last_purchase_at) <= 60", {"u2"}),
    ("not days_since(last_purchase_at) > 60", {"u2", "u3", "u5"}),
    ("days_since(last_purchase_at) > 1000000000", set()),
    ("days_since(last_purchase_at) > -1000000000", {"u1", "u2", "u4"}),
    ("hours_since(signup_at) <= 1", {"u5"}),
    ("hours_since(signup_at) < 1", set()),
    ("last_purchase_at < now - 60d", {"u1", "u4"}),
    ("member_since < now - 1w", {"u1"}),
    ("last_visit_at > first_purchase_at", {"u1", "u4"}),
    ('count("visit", within="7d") >= 1', {"u1", "u4"}),  # (T-7d, T]
    ('count("visit", within=7d) == 2', {"u1"}),
    ('count("visit", within=8d) >= 2', {"u1", "u4"}),
    ('count("visit") == 0', {"u2", "u3", "u5"}),  # u2's visit is after T
    ('count("visit") in [1, 2]', {"u1", "u4"}),
    ('sum("purchase.amount", within="100d") >= 300', {"u1"}),
    ('sum("purchase.amount", within="100d") >= 299.99', {"u1"}),
    ('sum("refund.amount") > 0', {"u2"}),
    ('sum("purchase.amount") == 0', {"u3", "u5"}),
    ('received("welcome-email", within="14d")', {"u1"}),
    # Held out is not received, nor is a skipped email (u3); u5 is after T.
    ('received("welcome-email")', {"u1", "u2"}),
    ('has_tag("wholesale")', {"u1"}),
    ('not has_tag("wholesale")', ALL - {"u1"}),
    ("attributes.vip_score >= 3", {"u1"}),  # "5" is text, not a number: missing
    ("not attributes.vip_score >= 3", ALL - {"u1"}),
    ('attributes.vip_score == "5"', {"u2"}),
    ("2 < attributes.vip_score < 3", {"u4"}),
    ("attributes.newsletter", {"u1"}),
    ("attributes.newsletter == false", {"u4"}),
    ('attributes.city in ["Paris", "Rome"]', {"u1"}),
    ("is_set(attributes.vip_score)", {"u1", "u2", "u4"}),  # JSON null is not set
    ("is_set(phone)", {"u1"}),  # an empty phone is not set
    ("not is_set(last_visit_at)", {"u2", "u3", "u5"}),
    ("email_opt_in", {"u1"}),
    ("not email_opt_in", ALL - {"u1"}),
    ('in_segment("lapsed_gold")', {"u1", "u4"}),
    ('in_segment("reachable_lapsed_gold")', {"u1"}),
    ('stage == "lapsed_member"', {"u1"}),
    ('stage in ["vip", "first_purchase"]', {"u2", "u4", "u5"}),
    ('not stage == "vip"', ALL - {"u5"}),  # u3 has no stage: not(false)
    ("1 < 2 and now > now - 1d", ALL),
    ('id == "u3" or id == "u5"', {"u3", "u5"}),
]


def test_conditions_select_exactly(shop):
    # One test over the whole table (rather than one per case) so the shop is built
    # once per backend; every mismatch is reported at once.
    wrong = {}
    for text, expected in CASES:
        got = _matching(shop, text)
        if got != expected:
            wrong[text] = (sorted(got), sorted(expected))
    assert wrong == {}


def test_event_conditions_read_the_triggering_event(shop):
    assert _matching(shop, 'event.type == "purchase" and event.amount >= 100', trigger="event") == {
        "u1"
    }
    assert _matching(shop, 'event.properties.sku == "A1"', trigger="event") == {"u4"}
    # The event trigger only offers events at or before T; here the test says so itself.
    recent = "hours_since(event.occurred_at) < 1 and event.occurred_at <= now"
    assert _matching(shop, recent, trigger="event") == {"u4"}


def test_the_same_condition_at_another_instant(shop):
    # A week later the window is (T, T + 7d]: u2's visit at T + 1d is in it, u4's
    # visit at exactly T is not.
    later = T + 7 * DAY
    assert _matching(shop, 'count("visit", within="7d") >= 1', now=later) == {"u2"}
    assert _matching(shop, "days_since(last_purchase_at) > 90", now=later) == {"u1", "u4"}


def test_days_since_compiles_to_a_bound_instant():
    catalog = Catalog.for_trigger("schedule")
    ctx = CompileContext(
        now=T, users=User.__table__, profiles=sa.table("profiles", sa.column("last_purchase_at"))
    )
    compiled = compile_condition(
        check_condition("days_since(last_purchase_at) > 60", catalog=catalog), ctx
    ).compile(dialect=sqlite.dialect())
    assert str(compiled) == (
        "profiles.last_purchase_at IS NOT NULL AND profiles.last_purchase_at < ?"
    )
    assert list(compiled.params.values()) == [T - 60 * DAY]


def test_explain_shows_missing_values_as_unknown(shop):
    text = "total_spent >= 200 and not days_since(last_purchase_at) > 60"
    expr = check_condition(text, catalog=Catalog.for_trigger("schedule"))
    with shop.connect() as connection:
        ctx = CompileContext.for_connection(connection, shop.settings, T)
        columns = compile_explain(expr, ctx)
        row = connection.execute(explain_query(expr, ctx, "u3")).mappings().one()
    shown = [(c.role, c.source, row[c.label]) for c in columns]
    assert shown == [
        ("clause", "total_spent >= 200", False),
        ("leaf", "total_spent >= 200", False),
        ("operand", "total_spent", 0),
        ("clause", "not days_since(last_purchase_at) > 60", True),
        ("leaf", "days_since(last_purchase_at) > 60", None),  # unknown: never bought
        ("operand", "last_purchase_at", None),
    ]
    assert [c.parent for c in columns] == [None, "c0", "c1", None, "c3", "c4"]


def test_explain_agrees_with_the_audience(shop):
    text = 'member_tier in ["gold", "silver"] and (total_spent >= 200 or has_tag("wholesale"))'
    expr = check_condition(text, catalog=Catalog.for_trigger("schedule"))
    with shop.connect() as connection:
        ctx = CompileContext.for_connection(connection, shop.settings, T)
        audience = set(connection.execute(matching_users(expr, ctx)).scalars())
        explained = set()
        for user in sorted(ALL):
            row = connection.execute(explain_query(expr, ctx, user)).mappings().one()
            clauses = [c for c in compile_explain(expr, ctx) if c.role == "clause"]
            if all(row[c.label] for c in clauses):
                explained.add(user)
    assert explained == audience == {"u1"}
