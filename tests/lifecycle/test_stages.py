"""Stage definitions: boundaries, time travel, one stage per seen user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from lifecycle_data import add_events, add_users

from engine.lifecycle import STAGES, stages_as_of

T0 = datetime(2026, 1, 10, 9, 30, 15, 123456, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def stages_at(store, as_of: datetime) -> dict[str, str | None]:
    with store.connect() as connection:
        query = stages_as_of(connection, store.settings, as_of)
        return dict(connection.execute(query).all())


def test_stage_names_in_priority_order():
    assert STAGES == (
        "churned",
        "lapsed_member",
        "vip",
        "repeat_buyer",
        "first_purchase",
        "registered",
        "new_visitor",
        "prospect",
    )


def test_last_purchase_boundaries_at_exactly_90_and_365_days(store):
    with store.begin() as connection:
        add_users(connection, T0, {"id": "buyer"})
        add_events(connection, T0, ("buyer", "purchase", T0, 120))
    assert stages_at(store, T0) == {"buyer": "first_purchase"}
    assert stages_at(store, T0 + 90 * DAY) == {"buyer": "first_purchase"}
    assert stages_at(store, T0 + 90 * DAY + SECOND) == {"buyer": "lapsed_member"}
    assert stages_at(store, T0 + 365 * DAY) == {"buyer": "lapsed_member"}
    assert stages_at(store, T0 + 365 * DAY + SECOND) == {"buyer": "churned"}


def test_member_without_purchase_lapses_90_days_after_member_since(store):
    with store.begin() as connection:
        add_users(
            connection,
            T0,
            {"id": "member", "member_since": T0},
            {"id": "signed", "member_since": None},
        )
        add_events(connection, T0, ("signed", "signup", T0 + DAY))
    assert stages_at(store, T0 + 90 * DAY) == {"member": "registered", "signed": "registered"}
    assert stages_at(store, T0 + 90 * DAY + SECOND) == {
        "member": "lapsed_member",
        "signed": "registered",
    }
    assert stages_at(store, T0 + 91 * DAY + SECOND) == {
        "member": "lapsed_member",
        "signed": "lapsed_member",
    }
    assert stages_at(store, T0 + 365 * DAY + SECOND)["member"] == "churned"


def test_new_visitor_becomes_prospect_after_30_days(store):
    with store.begin() as connection:
        add_users(connection, T0, {"id": "visitor"})
        add_events(connection, T0, ("visitor", "visit", T0), ("visitor", "visit", T0 + 40 * DAY))
    assert stages_at(store, T0 + 30 * DAY) == {"visitor": "new_visitor"}
    # Returning later does not make the visitor new again: first seen is what counts.
    assert stages_at(store, T0 + 30 * DAY + SECOND) == {"visitor": "prospect"}
    assert stages_at(store, T0 + 41 * DAY) == {"visitor": "prospect"}


def test_vip_by_total_spent_or_tier_until_lapsed(store):
    with store.begin() as connection:
        add_users(
            connection,
            T0,
            {"id": "big", "member_since": T0},
            {"id": "plat", "member_tier": "platinum", "member_since": T0},
            {"id": "gold", "member_tier": "gold", "member_since": T0},
            {"id": "almost"},
        )
        add_events(
            connection,
            T0,
            ("big", "purchase", T0, 5000),
            ("plat", "purchase", T0, 10),
            ("gold", "purchase", T0, 300),
            ("gold", "purchase", T0 + DAY, 300),
            ("almost", "purchase", T0, 4000),
            ("almost", "purchase", T0, 1500),
            ("almost", "refund", T0 + DAY, 600),
        )
    assert stages_at(store, T0 + 2 * DAY) == {
        "big": "vip",
        "plat": "vip",
        "gold": "repeat_buyer",
        "almost": "repeat_buyer",  # 5,500 spent less a 600 refund
    }
    assert stages_at(store, T0 + 91 * DAY)["big"] == "lapsed_member"
    assert stages_at(store, T0 + 91 * DAY)["plat"] == "lapsed_member"


def test_stage_as_of_t_ignores_later_events_and_future_membership(store):
    with store.begin() as connection:
        add_users(
            connection,
            T0,
            {"id": "u1"},
            {"id": "u2", "member_since": T0 + 5 * DAY},
            {"id": "ghost"},
        )
        add_events(
            connection,
            T0,
            ("u1", "visit", T0),
            ("u1", "purchase", T0 + 3 * DAY, 50),
            ("u1", "purchase", T0 + 4 * DAY, 50),
        )
    assert stages_at(store, T0 - SECOND) == {"u1": None, "u2": None, "ghost": None}
    assert stages_at(store, T0 + DAY) == {"u1": "new_visitor", "u2": None, "ghost": None}
    assert stages_at(store, T0 + 3 * DAY) == {"u1": "first_purchase", "u2": None, "ghost": None}
    assert stages_at(store, T0 + 5 * DAY) == {
        "u1": "repeat_buyer",
        "u2": "registered",
        "ghost": None,
    }


def test_every_seen_user_has_exactly_one_stage(store):
    users = [
        {"id": f"u{i}", "member_since": T0 - i * 7 * DAY if i % 3 else None} for i in range(60)
    ]
    events = []
    for i in range(60):
        start = T0 - i * 6 * DAY
        events.append((f"u{i}", "visit", start))
        for n in range(i % 4):
            events.append((f"u{i}", "purchase", start + n * 20 * DAY, 100 * (i % 7)))
    with store.begin() as connection:
        add_users(connection, T0, *users, {"id": "unseen"})
        add_events(connection, T0, *events)
    for as_of in (T0 - 200 * DAY, T0, T0 + 100 * DAY, T0 + 500 * DAY):
        with store.connect() as connection:
            query = stages_as_of(connection, store.settings, as_of).subquery()
            rows = connection.execute(sa.select(query.c.user_id, query.c.stage)).all()
            seen = {
                row[0]
                for row in connection.execute(
                    sa.text("SELECT user_id FROM events WHERE occurred_at <= :t"),
                    {"t": as_of.replace(tzinfo=None) if store.dialect == "sqlite" else as_of},
                )
            } | {u["id"] for u in users if u["member_since"] and u["member_since"] <= as_of}
        assert len(rows) == 61
        staged = {user for user, stage in rows if stage is not None}
        assert staged == seen
        assert {stage for _, stage in rows if stage} <= set(STAGES)
