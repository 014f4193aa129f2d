"""Profiles: per-user aggregates derived from events.

One definition, three uses: `refresh_profiles` upserts it into the `profiles` table
for the given users (recomputed from all their events), `merge_into_profiles` adds the
aggregates of the events an ingest batch just inserted to the stored ones (every
aggregate is a min, max, count or sum, so adding them in any order, or in any split
into batches, gives what a full recomputation gives: tests/ingest/test_profile_upkeep.py
holds the two equal), and `profiles_as_of` returns it as a subquery over events up to T
when T is earlier than the newest stored event (DESIGN invariant 5: evaluation at T
sees only events at or before T).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection, FromClause, Select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

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
# How each aggregate combines with the stored value when new events arrive.
_EARLIEST = ("first_seen_at", "signup_at", "first_purchase_at")
_LATEST = ("last_seen_at", "last_purchase_at", "last_visit_at")
_COUNTS = ("purchase_count", "refund_count", "event_count")


class as_money(FunctionElement):
    """An amount as the Money column holds it: rounded to the cent.

    PostgreSQL casts to NUMERIC(14, 2). SQLite has no decimal type: amounts are
    doubles, and a CAST to NUMERIC changes nothing, so a sum kept the rounding noise of
    the order it was added in (33.33 + 33.33 + 33.34 may be 99.99999999999999 one way
    and 100.00000000000001 another). `round(x, 2)` gives the double nearest to the cent
    amount, so a total summed in one go and one added up batch by batch are the same
    value, as on PostgreSQL (and a threshold such as `total_spent >= 100` agrees).
    """

    type = Money
    inherit_cache = True
    name = "as_money"


@compiles(as_money)
def _as_money_default(element, compiler, **kw):
    (value,) = list(element.clauses)
    return compiler.process(sa.cast(value, Money), **kw)


@compiles(as_money, "sqlite")
def _as_money_sqlite(element, compiler, **kw):
    (value,) = list(element.clauses)
    return f"round({compiler.process(value, **kw)}, 2)"


def _aggregates(source: FromClause) -> list[sa.ColumnElement]:
    """user_id + PROFILE_COLUMNS over `source` (events, or rows shaped like them)."""
    c = source.c

    def when(event_type: str, value):
        return sa.case((c.type == event_type, value))

    purchases = sa.func.sum(when("purchase", 1))
    gross = sa.func.sum(when("purchase", c.amount))
    refunds = sa.func.sum(when("refund", c.amount))
    # GMV nets refunds out (DESIGN "KPIs").
    total = as_money(sa.func.coalesce(gross, 0) - sa.func.coalesce(refunds, 0))
    return [
        c.user_id,
        sa.func.min(c.occurred_at).label("first_seen_at"),
        sa.func.max(c.occurred_at).label("last_seen_at"),
        sa.func.min(when("signup", c.occurred_at)).label("signup_at"),
        sa.func.min(when("purchase", c.occurred_at)).label("first_purchase_at"),
        sa.func.max(when("purchase", c.occurred_at)).label("last_purchase_at"),
        sa.func.max(when("visit", c.occurred_at)).label("last_visit_at"),
        sa.func.coalesce(purchases, 0).label("purchase_count"),
        sa.func.coalesce(sa.func.sum(when("refund", 1)), 0).label("refund_count"),
        total.label("total_spent"),
        as_money(total / sa.func.nullif(purchases, 0)).label("avg_order_value"),
        sa.func.count().label("event_count"),
    ]


def profile_aggregates(
    *, as_of: datetime | None = None, user_ids: sa.ColumnElement | Select | None = None
) -> Select:
    """SELECT user_id, <PROFILE_COLUMNS> FROM events GROUP BY user_id.

    `user_ids` restricts the users (a subquery of ids, for ingest upkeep);
    `as_of` restricts the events to those at or before that instant.
    """
    query = sa.select(*_aggregates(events)).group_by(events.c.user_id)
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
    (engine/lifecycle/dirty.py) both lock this way on a distributed store,
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


def lock_users_in_id_order(connection: Connection, ids: Select) -> None:
    """Lock the users rows `ids` selects, in id order, as the stage refresh locks them
    (engine/lifecycle/dirty.py), so that a writer of many users and the refresh never
    deadlock; on Citus, which refuses a multi-shard FOR UPDATE, by the advisory locks
    the refresh takes there, in the same order."""
    from engine.store.distribute import users_distributed

    if users_distributed(connection):
        lock_users_by_advisory_lock(connection, connection.execute(ids).scalars())
    else:
        connection.execute(ids.order_by(users.c.id).with_for_update()).all()


def refresh_profiles(
    connection: Connection, user_ids: sa.ColumnElement | Select | None, now: datetime
) -> int:
    """Recompute and upsert the profiles of `user_ids` (all users when None)."""
    source = profile_aggregates(user_ids=user_ids).add_columns(_stamp(now))
    columns = ["user_id", *PROFILE_COLUMNS, "updated_at"]
    from engine.store.sql import dialect_insert

    statement = dialect_insert(connection, profiles).from_select(columns, source.where(sa.true()))
    statement = statement.on_conflict_do_update(
        index_elements=[profiles.c.user_id],
        set_={name: statement.excluded[name] for name in columns[1:]},
    )
    count = connection.execute(statement).rowcount
    flag_stage_dirty(connection, user_ids)
    return count


def merge_into_profiles(connection: Connection, new_events: FromClause, now: datetime):
    """INSERT ... ON CONFLICT DO UPDATE adding the aggregates of `new_events` to profiles.

    `new_events` holds user_id, type, occurred_at and amount of events just inserted,
    each once (never a duplicate the insert skipped, or it would count twice). Reads
    only those rows, not every event of their users: the stored profile is the running
    total. Returns the statement, for the caller to run (or to wrap, on PostgreSQL, in
    the CTE of the events insert that produced the rows).
    """
    source = (
        sa.select(*_aggregates(new_events), _stamp(now))
        .where(sa.true())  # SQLite's INSERT ... SELECT ... ON CONFLICT parsing ambiguity
        .group_by(new_events.c.user_id)
        # In user order: concurrent batches lock the profiles they share in one order.
        .order_by(new_events.c.user_id)
    )
    from engine.store.sql import dialect_insert

    statement = dialect_insert(connection, profiles).from_select(
        ["user_id", *PROFILE_COLUMNS, "updated_at"], source
    )
    stored, new = profiles.c, statement.excluded
    merged: dict[str, sa.ColumnElement] = {}
    for name in _EARLIEST:
        merged[name] = _first_of(stored[name], new[name], sa.ColumnElement.__lt__)
    for name in _LATEST:
        merged[name] = _first_of(stored[name], new[name], sa.ColumnElement.__gt__)
    for name in _COUNTS:
        merged[name] = stored[name] + new[name]
    total = as_money(stored.total_spent + new.total_spent)
    merged["total_spent"] = total
    purchases = stored.purchase_count + new.purchase_count
    merged["avg_order_value"] = as_money(total / sa.func.nullif(purchases, 0))
    merged["updated_at"] = new.updated_at
    return statement.on_conflict_do_update(index_elements=[profiles.c.user_id], set_=merged)


def _first_of(stored, new, before) -> sa.ColumnElement:
    """The earlier (or later) of two nullable instants, NULL only when both are.

    Spelled as CASE: SQLite's two-argument min() is NULL when either is NULL."""
    return sa.case(
        (stored.is_(None), new),
        (sa.and_(new.is_not(None), before(new, stored)), new),
        else_=stored,
    )


def _stamp(now: datetime) -> sa.ColumnElement:
    return sa.literal(now, profiles.c.updated_at.type).label("updated_at")


def flag_stage_dirty(connection: Connection, user_ids: sa.ColumnElement | Select | None) -> None:
    """Flag users whose profile changed (all users when None): their stage may have.

    The next stage refresh (engine/lifecycle/) then looks at them.
    """
    dirty = users.update().values(stage_dirty=True)
    if user_ids is None:
        connection.execute(dirty)
        return
    dirty = dirty.where(users.c.id.in_(user_ids))
    if connection.dialect.name == "sqlite":
        # One writer at a time: nothing can clear a flag meanwhile, so users already
        # flagged need no write.
        connection.execute(dirty.where(users.c.stage_dirty.is_(False)))
        return
    lock_users_in_id_order(connection, sa.select(users.c.id).where(users.c.id.in_(user_ids)))
    # A stage refresh in progress holds the rows it is about to clear: the lock above
    # waited for it to commit. This next statement (READ COMMITTED: a new snapshot)
    # sees its cleared flags, and the lock keeps any other refresh from clearing one
    # until this transaction commits; so skipping the users already flagged loses no
    # flag, and saves rewriting most rows of a first import (new users start flagged).
    connection.execute(dirty.where(users.c.stage_dirty.is_(False)))
