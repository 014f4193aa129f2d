"""Recording stage history: `refresh_stages` writes every stage change as of `now`
into stage_memberships, set-based, for the users whose stage can have changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, FromClause

from engine.clock import ensure_aware
from engine.config import Settings
from engine.lifecycle.crossings import candidates
from engine.lifecycle.definitions import current_stage_rows, instant
from engine.lifecycle.dirty import clear_flags, snapshot_dirty
from engine.lifecycle.horizon import forget_horizon, remember_horizon
from engine.lifecycle.marks import read_mark, settings_hash, write_mark
from engine.lifecycle.tables import events_table, memberships
from engine.store.distribute import users_distributed

# Only activity ends these stays (churned, or a never-buyer's lapse).
_LEFT_BY_ACTIVITY = ("churned", "lapsed_member")


@dataclass(frozen=True)
class StageRefresh:
    """What one `refresh_stages` call recorded: new entries per stage."""

    now: datetime
    entered: dict[str, int] = field(default_factory=dict)
    exited: int = 0

    @property
    def total_entered(self) -> int:
        return sum(self.entered.values())


def refresh_stages(
    connection: Connection, settings: Settings, now: datetime, *, steady: bool = False
) -> StageRefresh:
    """Record every stage change as of `now` in stage_memberships, set-based.

    A user whose stage differs from their open row (or who has none) gets a new row
    (entered_at where the definition gives it, recorded_at = now) and the old row is
    closed at that instant. Calling it twice at the same `now` changes nothing, so a
    stage trigger fires once per row. Run it inside the caller's transaction.

    After the first refresh, only the users whose data changed or one of whose dates
    crossed a threshold since the previous refresh are recomputed (crossings.py);
    different thresholds recompute everyone.

    `steady` (the daemon's steady ticks) also records when the next date crosses a
    threshold, so that the next steady tick can tell with `stages_unchanged` that it
    has nothing to refresh.
    """
    now = ensure_aware(now)
    fingerprint = settings_hash(settings.lifecycle)
    forget_horizon(connection.engine)
    if connection.dialect.name == "postgresql":
        # Two refreshes at once would both see "no open row" and insert twice; SQLite's
        # BEGIN IMMEDIATE already serialises writers.
        connection.exec_driver_sql("LOCK TABLE stage_memberships IN SHARE ROW EXCLUSIVE MODE")
    mark = read_mark(connection)
    if mark is not None and mark.as_of > now:
        # Another daemon refreshed to a later instant while this one waited for the
        # lock: refreshing to an earlier `now` would rewrite history backwards.
        return StageRefresh(now=now)
    incremental = mark is not None and mark.settings_hash == fingerprint and mark.as_of <= now
    dirty = snapshot_dirty(connection)
    only = None
    if incremental:
        only = candidates(connection, settings.lifecycle, mark.as_of, now, dirty)
    computed = current_stage_rows(connection, settings, now, only=only)
    last_id = connection.execute(
        sa.select(sa.func.coalesce(sa.func.max(memberships.c.id), 0))
    ).scalar_one()
    connection.execute(
        memberships.insert().from_select(
            ["user_id", "stage", "entered_at", "exited_at", "recorded_at"],
            _changes(connection, computed, now),
        )
    )
    closed = _close_superseded(connection, last_id)
    # MATERIALIZED: read by id range first. Grouped directly, SQLite walks the whole
    # (stage, ...) index instead, for its order, which costs as much as every stay.
    new_rows = (
        sa.select(memberships.c.stage)
        .where(memberships.c.id > last_id)
        .cte("new_rows")
        .prefix_with("MATERIALIZED")
    )
    counts = connection.execute(
        sa.select(new_rows.c.stage, sa.func.count()).group_by(new_rows.c.stage)
    ).all()  # fetched now: SQLite cannot drop a table while a cursor is open
    clear_flags(connection, dirty)
    write_mark(connection, now, fingerprint)
    if steady:
        remember_horizon(connection, settings.lifecycle, now, fingerprint)
    return StageRefresh(now=now, entered={stage: n for stage, n in counts}, exited=closed)


def _changes(connection: Connection, computed, now: datetime) -> sa.Select:
    """The rows to insert: each computed user whose stage differs from their open row
    (or who has none), with the instant they entered it."""
    open_rows = memberships.alias("open_row")
    at = instant(now)
    natural = sa.case(
        (computed.c.entered_at.is_(None), at),
        (computed.c.entered_at > at, at),
        else_=computed.c.entered_at,
    )
    returns, returned_at = _returned_at(connection, computed, open_rows, at)
    entered_at = sa.case(
        (open_rows.c.entered_at.is_(None), natural),
        (natural >= open_rows.c.entered_at, natural),
        (
            open_rows.c.stage.in_(_LEFT_BY_ACTIVITY),
            sa.func.coalesce(returned_at, open_rows.c.entered_at),
        ),
        # History stays monotone even when late events move a natural entry instant
        # before the previous entry: the new stay starts no earlier than the old one.
        else_=open_rows.c.entered_at,
    )
    joined = computed.outerjoin(
        open_rows,
        sa.and_(open_rows.c.user_id == computed.c.user_id, open_rows.c.exited_at.is_(None)),
    )
    if returns is not None:
        joined = joined.outerjoin(returns, returns.c.user_id == computed.c.user_id)
    return (
        sa.select(computed.c.user_id, computed.c.stage, entered_at, sa.null(), at)
        .select_from(joined)
        .where(
            computed.c.stage.is_not(None),
            sa.or_(open_rows.c.stage.is_(None), open_rows.c.stage != computed.c.stage),
        )
    )


def _returned_at(
    connection: Connection, computed, open_rows, at: ColumnElement
) -> tuple[FromClause | None, ColumnElement]:
    """A user's return: their first event after the open stay began (at or before
    `at`), and the per-user subquery to join for it, if any.

    Only activity ends churned (or a never-buyer's lapse), so a user leaving it for a
    stage whose natural instant predates the stay (lapsed_member by an old purchase,
    registered by the signup) came back: the new stay starts at their return. Indexed
    by user; evaluated only for those rows.
    """
    events = events_table
    if users_distributed(connection):
        # Citus refuses a correlated subquery when the FROM clause holds a CTE: the
        # same instant, pre-aggregated per user over the open churned/lapsed rows (a
        # join co-located on user_id) and joined to the changes by user.
        stay = memberships.alias("stay")
        returns = (
            sa.select(events.c.user_id, sa.func.min(events.c.occurred_at).label("returned_at"))
            .join(
                stay,
                sa.and_(
                    stay.c.user_id == events.c.user_id,
                    stay.c.exited_at.is_(None),
                    stay.c.stage.in_(_LEFT_BY_ACTIVITY),
                    events.c.occurred_at > stay.c.entered_at,
                ),
            )
            .where(events.c.occurred_at <= at)
            .group_by(events.c.user_id)
            .subquery("returns")
        )
        return returns, returns.c.returned_at
    returned_at = (
        sa.select(sa.func.min(events.c.occurred_at))
        .where(
            events.c.user_id == computed.c.user_id,
            events.c.occurred_at > open_rows.c.entered_at,
            events.c.occurred_at <= at,
        )
        .correlate_except(events)
        .scalar_subquery()
    )
    return None, returned_at


def _close_superseded(connection: Connection, last_id: int) -> int:
    """Close each open row superseded by a row of this refresh (id > `last_id`) at the
    instant its successor was entered; returns how many were closed."""
    newer = memberships.alias("newer")
    successor = sa.and_(
        newer.c.user_id == memberships.c.user_id,
        newer.c.exited_at.is_(None),
        newer.c.id > memberships.c.id,
    )
    fresh = memberships.alias("fresh")
    entered_now = sa.select(fresh.c.user_id).where(fresh.c.id > last_id)
    return connection.execute(
        memberships.update()
        .where(
            # Only users with a row from this refresh: an indexed probe per change
            # rather than a scan of every open row.
            memberships.c.user_id.in_(entered_now),
            memberships.c.exited_at.is_(None),
            sa.exists().where(successor),
        )
        .values(
            exited_at=sa.select(sa.func.min(newer.c.entered_at)).where(successor).scalar_subquery()
        )
    ).rowcount
