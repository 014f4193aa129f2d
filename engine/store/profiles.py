"""Profiles: per-user aggregates derived from events.

One definition, two uses: `refresh_profiles` upserts it into the `profiles` table
for the users an ingest touched (recomputed from all their events, so out-of-order
events give the same result as in-order ones), and `profiles_as_of` returns it as a
subquery over events up to T when T is earlier than the newest stored event
(DESIGN invariant 5: evaluation at T sees only events at or before T).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection, FromClause, Select

from engine.store.people import Event, Profile, User
from engine.store.types import Money

events = Event.__table__
profiles = Profile.__table__
users = User.__table__

# The aggregate columns, in table order; user_id and updated_at are not aggregates.
PROFILE_COLUMNS = (
    "first_seen_at",
    "last_seen_at",
    "signup_at",
    "first_purchase_at",
    "last_purchase_at",
    "last_visit_at",
    "purchase_count",
    "refund_count",
    "total_spent",
    "avg_order_value",
    "event_count",
)


def _when(event_type: str, value):
    return sa.case((events.c.type == event_type, value))


def profile_aggregates(
    *, as_of: datetime | None = None, user_ids: sa.ColumnElement | Select | None = None
) -> Select:
    """SELECT user_id, <PROFILE_COLUMNS> FROM events GROUP BY user_id.

    `user_ids` restricts the users (a subquery of ids, for ingest upkeep);
    `as_of` restricts the events to those at or before that instant.
    """
    purchases = sa.func.sum(_when("purchase", 1))
    gross = sa.func.sum(_when("purchase", events.c.amount))
    refunds = sa.func.sum(_when("refund", events.c.amount))
    # GMV nets refunds out (DESIGN "KPIs").
    total = sa.func.coalesce(gross, 0) - sa.func.coalesce(refunds, 0)
    query = sa.select(
        events.c.user_id,
        sa.func.min(events.c.occurred_at).label("first_seen_at"),
        sa.func.max(events.c.occurred_at).label("last_seen_at"),
        sa.func.min(_when("signup", events.c.occurred_at)).label("signup_at"),
        sa.func.min(_when("purchase", events.c.occurred_at)).label("first_purchase_at"),
        sa.func.max(_when("purchase", events.c.occurred_at)).label("last_purchase_at"),
        sa.func.max(_when("visit", events.c.occurred_at)).label("last_visit_at"),
        sa.func.coalesce(purchases, 0).label("purchase_count"),
        sa.func.coalesce(sa.func.sum(_when("refund", 1)), 0).label("refund_count"),
        sa.cast(total, Money).label("total_spent"),
        sa.cast(total / sa.func.nullif(purchases, 0), Money).label("avg_order_value"),
        sa.func.count().label("event_count"),
    ).group_by(events.c.user_id)
    if as_of is not None:
        query = query.where(events.c.occurred_at <= as_of)
    if user_ids is not None:
        query = query.where(events.c.user_id.in_(user_ids))
    return query


def newest_profiled_event_at(connection: Connection) -> datetime | None:
    """The newest event the maintained profiles include (an index lookup)."""
    return connection.execute(sa.select(sa.func.max(profiles.c.last_seen_at))).scalar()


def is_current(connection: Connection, as_of: datetime) -> bool:
    """True when the maintained profiles already describe the store as of `as_of`."""
    newest = newest_profiled_event_at(connection)
    return newest is None or as_of >= newest


def profiles_as_of(connection: Connection, as_of: datetime) -> FromClause:
    """A selectable with user_id + PROFILE_COLUMNS describing every user at `as_of`.

    The maintained table when nothing newer than `as_of` is stored (fast, indexed);
    otherwise the same aggregates derived from events at or before `as_of` (exact).
    """
    if is_current(connection, as_of):
        return profiles
    return profile_aggregates(as_of=as_of).subquery("profiles_as_of")


# The key space of the per-user advisory locks taken instead of row locks on Citus.
_USER_LOCK_SPACE = 0x6E75646765  # "nudge"


def lock_users_by_advisory_lock(connection: Connection, ids: Iterable[str]) -> None:
    """Take a transaction-scoped advisory lock per user id, in sorted id order.

    Stands in for `SELECT ... FOR UPDATE` over many users where Citus refuses it (a
    multi-shard query): ingest (`refresh_profiles`) and the stage refresh
    (engine/lifecycle.py `_snapshot_dirty`) both lock this way on a distributed store,
    so they still exclude each other, and in the same order, so they never deadlock.
    The locks live on the coordinator, where every Nudge connection is made.
    """
    ordered = sorted(set(ids))
    if not ordered:
        return
    connection.execute(
        sa.text(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(u.id, :space))) "
            "FROM (SELECT id, n FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY t(id, n) "
            "ORDER BY n) u"
        ),
        {"ids": ordered, "space": _USER_LOCK_SPACE},
    )


def refresh_profiles(
    connection: Connection, user_ids: sa.ColumnElement | Select | None, now: datetime
) -> int:
    """Recompute and upsert the profiles of `user_ids` (all users when None)."""
    source = profile_aggregates(user_ids=user_ids).add_columns(
        sa.literal(now, Profile.__table__.c.updated_at.type).label("updated_at")
    )
    columns = ["user_id", *PROFILE_COLUMNS, "updated_at"]
    from engine.store.sql import dialect_insert

    statement = dialect_insert(connection, profiles).from_select(columns, source.where(sa.true()))
    statement = statement.on_conflict_do_update(
        index_elements=[profiles.c.user_id],
        set_={name: statement.excluded[name] for name in columns[1:]},
    )
    count = connection.execute(statement).rowcount
    # Their stage may have changed: the next stage refresh must look at them.
    dirty = users.update().values(stage_dirty=True)
    if user_ids is not None:
        dirty = dirty.where(users.c.id.in_(user_ids))
        from engine.store.distribute import users_distributed

        if users_distributed(connection):
            # Citus refuses a multi-shard FOR UPDATE: advisory locks, same order.
            ids = connection.execute(sa.select(users.c.id).where(users.c.id.in_(user_ids)))
            lock_users_by_advisory_lock(connection, ids.scalars())
        elif connection.dialect.name == "postgresql":
            # Lock in id order, as the stage refresh does, so the two never deadlock.
            connection.execute(
                sa.select(users.c.id)
                .where(users.c.id.in_(user_ids))
                .order_by(users.c.id)
                .with_for_update()
            ).all()
    # Unconditionally, not only where the flag is off: on PostgreSQL a stage refresh
    # in progress holds the rows it is about to clear, and this write must wait for it
    # and flag the user again afterwards (engine/lifecycle.py `_snapshot_dirty`).
    connection.execute(dirty)
    return count
