"""A steady stage refresh costs what the users who can have changed cost, not what
every user costs, and records exactly the history a full recomputation records.

The daemon refreshes stages at every tick; in a shop of a million users some date
crosses a threshold nearly every minute, so the refresh itself must not read every
user. Its statements are checked through SQLite's query plans, which do not depend on
the table sizes (no statistics): no statement reads a per-user table whole.
"""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from lifecycle_data import add_events, add_users

from engine.lifecycle import refresh_stages, stages_as_of, stages_unchanged
from engine.store.people import LifecycleMark, StageMembership, User

T = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
memberships = StageMembership.__table__
# The tables whose size is the number of users (or more): a plan line "SCAN <one of
# these>" reads it whole, through an index or not.
PER_USER = ("users", "profiles", "stage_memberships", "events", "open_row", "newer", "fresh")
# Found by the partial index of flagged users, which holds only those.
FLAGGED_INDEX = "USING INDEX ix_users_stage_dirty"


def _shop(connection) -> None:
    """Users whose dates cross each threshold at different hours after T (one exactly
    at a refresh instant, T + 2 h, the others between refreshes), and a few bystanders."""
    users, events = [], []
    for hours in (0.5, 2, 3.25):
        at = T + hours * HOUR
        n = str(hours).replace(".", "_")
        users += [
            {"id": f"lapsing-buyer-{n}"},
            {"id": f"inactive-member-{n}", "member_since": at - 90 * DAY},
            {"id": f"churning-member-{n}", "member_since": at - 365 * DAY},
            {"id": f"aging-visitor-{n}"},
            {"id": f"churning-visitor-{n}"},
            {"id": f"arriving-member-{n}", "member_since": at},
            {"id": f"quiet-member-{n}", "member_since": at - 200 * DAY},
        ]
        events += [
            (f"lapsing-buyer-{n}", "purchase", at - 90 * DAY, 30),
            (f"aging-visitor-{n}", "visit", at - 30 * DAY),
            (f"churning-visitor-{n}", "visit", at - 365 * DAY),
            (f"quiet-member-{n}", "visit", at - 90 * DAY),
        ]
    users += [{"id": "regular", "member_since": T - 10 * DAY}, {"id": "vip", "member_tier": "x"}]
    events += [("regular", "purchase", T - DAY, 20), ("vip", "purchase", T - DAY, 9000)]
    add_users(connection, T - DAY, *users)
    add_events(connection, T - DAY, *events)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_steady_refresh_reads_no_per_user_table_whole(store):
    with store.begin() as connection:
        _shop(connection)
        refresh_stages(connection, store.settings, T, steady=True)  # the full one
        # New data for one user, so the dirty path runs too.
        add_events(connection, T + HOUR, ("regular", "visit", T + HOUR))
    plans: dict[str, list[str]] = {}

    def explain(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "WITH")):
            try:
                rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            except sqlite3.Error:  # e.g. a parameter the driver binds differently
                return
            plans[" ".join(statement.split())[:120]] = [row[3] for row in rows]

    sa.event.listen(store.engine, "before_cursor_execute", explain)
    try:
        with store.begin() as connection:
            steady = refresh_stages(connection, store.settings, T + 4 * HOUR, steady=True)
            # No date crosses a threshold for days: the next steady tick may skip.
            assert stages_unchanged(connection, store.settings, T + 5 * HOUR)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", explain)

    assert steady.total_entered > 0  # it did record the crossings
    assert plans, "no statement was explained"
    whole = [
        (statement, line)
        for statement, lines in plans.items()
        for line in lines
        if line.startswith("SCAN ") and line.split()[1] in PER_USER and FLAGGED_INDEX not in line
    ]
    assert whole == []


def _open_stages(connection) -> dict[str, str]:
    rows = connection.execute(
        sa.select(memberships.c.user_id, memberships.c.stage).where(
            memberships.c.exited_at.is_(None)
        )
    )
    return dict(rows.all())


def _history(connection) -> list[tuple]:
    m = memberships
    rows = connection.execute(
        sa.select(m.c.user_id, m.c.stage, m.c.entered_at, m.c.exited_at, m.c.recorded_at).order_by(
            m.c.user_id, m.c.id
        )
    )
    return [tuple(row) for row in rows]


def test_incremental_history_equals_a_full_recomputation_at_every_refresh(store):
    """The same refreshes twice: incrementally (as the daemon runs them), then from an
    empty history with the mark removed before each refresh, which recomputes
    everyone. Every stay, entry, exit and recording instant must be the same."""
    instants = [T + minutes * timedelta(minutes=1) for minutes in (0, 20, 60, 120, 121, 180, 240)]
    with store.begin() as connection:
        _shop(connection)
    for at in instants:
        with store.begin() as connection:
            refresh_stages(connection, store.settings, at, steady=True)
            computed = dict(
                (user, stage)
                for user, stage in connection.execute(
                    stages_as_of(connection, store.settings, at)
                ).all()
                if stage is not None
            )
            assert _open_stages(connection) == computed, at
    with store.connect() as connection:
        incremental = _history(connection)

    with store.begin() as connection:
        connection.execute(memberships.delete())
        connection.execute(User.__table__.update().values(stage_dirty=True))
    for at in instants:
        with store.begin() as connection:
            connection.execute(LifecycleMark.__table__.delete())
            refresh_stages(connection, store.settings, at)
    with store.connect() as connection:
        full = _history(connection)

    assert incremental == full
    stages = {stage for _, stage, *_ in incremental}
    assert {"lapsed_member", "churned", "prospect", "registered"} <= stages
    # Every crossing user moved, including the ones exactly at a refresh instant (T + 2 h):
    # recorded by the refresh after it, not by the one at it.
    moved = {
        user
        for user, group in itertools.groupby(incremental, key=lambda r: r[0])
        if len(list(group)) > 1
    }
    assert {u for u in moved if u.endswith("-2")} == {
        "lapsing-buyer-2",
        "inactive-member-2",
        "churning-member-2",
        "aging-visitor-2",
        "churning-visitor-2",
        "quiet-member-2",
    }
    exact = [
        row for row in incremental if row[0] == "lapsing-buyer-2" and row[1] == "lapsed_member"
    ]
    assert exact[0][2] == T + 2 * HOUR and exact[0][4] == T + 121 * timedelta(minutes=1)
