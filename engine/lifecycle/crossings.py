"""Time alone: which users a date crossing a threshold can have moved between two
refreshes, and when the next crossing is.

A user's stage changes with no new data only when one of their dates becomes a
threshold old: a last purchase or last event `lapsed_days` old, a last event or signup
`churned_days` old, a first visit `new_visitor_days` old, a future member_since
arriving. Every such date is indexed (profiles.last_purchase_at, .last_seen_at,
.first_seen_at, users.member_since), so both questions below are index range scans
whose cost follows the number of users who crossed, not the number of users.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, FromClause, Select

from engine.clock import ensure_aware
from engine.config import LifecycleSettings
from engine.lifecycle.definitions import instant
from engine.lifecycle.tables import profiles_table, users_table
from engine.store.profiles import profiles_as_of


def thresholds(
    settings: LifecycleSettings, profiles: FromClause
) -> list[tuple[ColumnElement, int]]:
    """(date column, days): a user may change stage when date + days passes, and only
    then. The definitions read no other date: first and signup events are never later
    than the last event, so they need no threshold of their own."""
    u = users_table
    return [
        (u.c.member_since, 0),
        (profiles.c.last_purchase_at, settings.lapsed_days),
        (profiles.c.first_seen_at, settings.new_visitor_days),
        (profiles.c.last_seen_at, settings.lapsed_days),
        (u.c.member_since, settings.lapsed_days),
        (profiles.c.last_seen_at, settings.churned_days),
        (u.c.member_since, settings.churned_days),
    ]


def _crossed(column: ColumnElement, days: int, since: datetime, now: datetime):
    """date + days in [since, now]. From `since` inclusive: a stage changes strictly
    after its threshold, so a date whose threshold fell exactly on the last refresh's
    instant had not moved the user yet, and this refresh must look at them again."""
    return sa.and_(
        column >= instant(since - timedelta(days=days)),
        column <= instant(now - timedelta(days=days)),
    )


def candidates(
    connection: Connection,
    settings: LifecycleSettings,
    since: datetime,
    now: datetime,
    dirty: sa.Table,
) -> Select:
    """The ids of the users whose stage may differ from the last refresh at `since`:
    their data changed (the `dirty` snapshot) or one of their dates crossed a
    threshold in [since, now]. Everyone else provably keeps their stage.

    With the maintained profiles (current at `now`, the daemon's case) a UNION ALL of
    one index range scan per threshold; with profiles derived from the events as of
    `now` (an evaluation in the past) the same test over every user.
    """
    profiles = profiles_as_of(connection, now)
    pairs = thresholds(settings, profiles)
    if profiles is not profiles_table:
        u = users_table
        clauses = [u.c.id.in_(sa.select(dirty.c.id))]
        clauses += [_crossed(column, days, since, now) for column, days in pairs]
        return (
            sa.select(u.c.id)
            .select_from(u.outerjoin(profiles, profiles.c.user_id == u.c.id))
            .where(sa.or_(*clauses))
        )
    branches = [sa.select(dirty.c.id)]
    for column, days in pairs:
        user_id = users_table.c.id if column.table is users_table else profiles.c.user_id
        branches.append(sa.select(user_id).where(_crossed(column, days, since, now)))
    # Ids may repeat across branches; the caller's IN () needs no DISTINCT.
    return sa.union_all(*branches)


def next_crossing(
    connection: Connection, settings: LifecycleSettings, after: datetime
) -> datetime | None:
    """The earliest date + days at or after `after` over every user (the maintained
    profiles, current at `after`): for each threshold, the first date in its index at
    or after `after - days`, all in one statement. At, not only after: a stage changes
    strictly after its threshold, so a threshold equal to `after` still moves a user
    just after this refresh."""
    pairs = thresholds(settings, profiles_table)
    firsts = [
        sa.select(column)
        .where(column >= instant(after - timedelta(days=days)))
        .order_by(column)
        .limit(1)
        .scalar_subquery()
        for column, days in pairs
    ]
    row = connection.execute(sa.select(*firsts)).one()
    crossings = [
        ensure_aware(value) + timedelta(days=days)
        for value, (_, days) in zip(row, pairs, strict=True)
        if value is not None
    ]
    return min(crossings, default=None)
