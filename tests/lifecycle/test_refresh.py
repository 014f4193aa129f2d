"""refresh_stages: history of stage entries, exact entry instants, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from lifecycle_data import add_events, add_users

from engine.lifecycle import refresh_stages, stage_history
from engine.store.people import StageMembership

T0 = datetime(2026, 1, 10, 9, 30, 15, 123456, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def refresh(store, now):
    with store.begin() as connection:
        return refresh_stages(connection, store.settings, now)


def history(store, user_id):
    with store.connect() as connection:
        return [
            (row["stage"], row["entered_at"], row["exited_at"])
            for row in stage_history(connection, user_id)
        ]


def test_history_first_purchase_then_repeat_then_lapsed(store):
    with store.begin() as connection:
        add_users(connection, T0, {"id": "u1"})
        add_events(connection, T0, ("u1", "purchase", T0, 80))
    first = refresh(store, T0 + HOUR)
    assert first.entered == {"first_purchase": 1}
    assert history(store, "u1") == [("first_purchase", T0, None)]

    with store.begin() as connection:
        add_events(connection, T0, ("u1", "purchase", T0 + 10 * DAY, 90))
    second_at = T0 + 10 * DAY + HOUR
    assert refresh(store, second_at).entered == {"repeat_buyer": 1}

    lapse_at = T0 + 10 * DAY + 90 * DAY  # the exact instant of lapsing
    third = refresh(store, lapse_at + 3 * DAY)
    assert third.entered == {"lapsed_member": 1}
    assert third.exited == 1
    assert history(store, "u1") == [
        ("first_purchase", T0, second_at),
        ("repeat_buyer", second_at, lapse_at),
        ("lapsed_member", lapse_at, None),
    ]


def test_refresh_twice_at_the_same_now_changes_nothing(store):
    with store.begin() as connection:
        add_users(
            connection,
            T0,
            {"id": "visitor"},
            {"id": "member", "member_since": T0 - 5 * DAY},
            {"id": "buyer"},
            {"id": "unseen"},
        )
        add_events(
            connection,
            T0,
            ("visitor", "visit", T0 - 2 * DAY),
            ("buyer", "purchase", T0 - 400 * DAY, 10),
        )
    now = T0 + HOUR
    first = refresh(store, now)
    assert first.entered == {"new_visitor": 1, "registered": 1, "churned": 1}
    with store.connect() as connection:
        before = connection.execute(sa.select(StageMembership.__table__)).all()
    again = refresh(store, now)
    assert again.entered == {}
    assert again.exited == 0
    with store.connect() as connection:
        after = connection.execute(sa.select(StageMembership.__table__)).all()
    assert after == before
    # Entry instants come from the definitions, recorded_at is the refresh.
    assert history(store, "visitor") == [("new_visitor", T0 - 2 * DAY, None)]
    assert history(store, "member") == [("registered", T0 - 5 * DAY, None)]
    assert history(store, "buyer") == [("churned", T0 - 400 * DAY + 365 * DAY, None)]
    assert {row.recorded_at for row in after} == {now}


def test_each_seen_user_has_exactly_one_open_row(store):
    users = [{"id": f"u{i}"} for i in range(30)]
    events = []
    for i in range(30):
        events.append((f"u{i}", "visit", T0 - i * 5 * DAY))
        events += [(f"u{i}", "purchase", T0 - i * 5 * DAY + n * DAY, 30) for n in range(i % 3)]
    with store.begin() as connection:
        add_users(connection, T0, *users)
        add_events(connection, T0, *events)
    for now in (T0, T0 + 40 * DAY, T0 + 200 * DAY, T0 + 400 * DAY):
        refresh(store, now)
    memberships = StageMembership.__table__
    with store.connect() as connection:
        open_counts = connection.execute(
            sa.select(memberships.c.user_id, sa.func.count())
            .where(memberships.c.exited_at.is_(None))
            .group_by(memberships.c.user_id)
        ).all()
        overlapping = connection.execute(
            sa.select(sa.func.count()).where(memberships.c.exited_at < memberships.c.entered_at)
        ).scalar_one()
    assert sorted(open_counts) == sorted((f"u{i}", 1) for i in range(30))
    assert overlapping == 0
