"""Lifecycle stages: definitions -> one SQL CASE; the stage as of T; stage history.

Every seen user is in exactly one stage at any instant T. The definitions are tried
in `STAGES` order and the first that holds wins (docs/lifecycle.md has the table):

- ``churned``: no activity for more than `churned_days` before T: the user's last
  event of any kind (profiles.last_seen_at) and their signup (users.member_since)
  are both older. Inactivity churns everyone: buyers, members and visitors alike.
- ``lapsed_member``: a buyer whose last purchase is more than `lapsed_days` before T;
  or a member who never bought, with no activity for more than `lapsed_days`.
- ``vip``: total spent >= `vip_total_spent`, or member tier in `vip_tiers`.
- ``repeat_buyer``: two or more purchases. ``first_purchase``: exactly one.
- ``registered``: signed up at or before T, never bought.
- ``new_visitor``: seen, no signup, first seen at most `new_visitor_days` before T.
- ``prospect``: seen, no signup, first seen longer ago (a returning, anonymous visitor).

"More than N days" is strict: at exactly N days the user is not yet lapsed.
Only events at or before T count (DESIGN invariant 5), through `profiles_as_of`.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, FromClause, Select

from engine.clock import ensure_aware
from engine.config import LifecycleSettings, Settings
from engine.store.distribute import users_distributed
from engine.store.people import Event, LifecycleMark, StageMembership, User
from engine.store.profiles import is_current, lock_users_by_advisory_lock, profiles_as_of
from engine.store.sql import add_seconds
from engine.store.types import UTCDateTime

users_table = User.__table__
events_table = Event.__table__
memberships = StageMembership.__table__
marks = LifecycleMark.__table__

# Priority order: the first definition that holds is the user's stage.
STAGES: tuple[str, ...] = (
    "churned",
    "lapsed_member",
    "vip",
    "repeat_buyer",
    "first_purchase",
    "registered",
    "new_visitor",
    "prospect",
)

# The order a marketer reads a funnel in: tables and reports list stages this way.
FUNNEL_ORDER: tuple[str, ...] = (
    "new_visitor",
    "prospect",
    "registered",
    "first_purchase",
    "repeat_buyer",
    "vip",
    "lapsed_member",
    "churned",
)


@dataclass(frozen=True)
class StageRefresh:
    """What one `refresh_stages` call recorded: new entries per stage."""

    now: datetime
    entered: dict[str, int] = field(default_factory=dict)
    exited: int = 0

    @property
    def total_entered(self) -> int:
        return sum(self.entered.values())


def add_days(instant: ColumnElement, days: int) -> ColumnElement:
    """`instant + days`, exact to the microsecond (engine/store/sql.py)."""
    return add_seconds(instant, sa.literal(days * 86_400, sa.Integer))


def _instant(value: datetime) -> ColumnElement:
    return sa.literal(ensure_aware(value), UTCDateTime())


def _latest(a: ColumnElement, b: ColumnElement) -> ColumnElement:
    """The later of two instants, ignoring NULLs (portable GREATEST)."""
    return sa.case((a.is_(None), b), (b.is_(None), a), (b > a, b), else_=a)


@dataclass(frozen=True)
class _Facts:
    """What the definitions read about a user at one instant T, as SQL expressions.

    The conditions compare plain columns (no nested CASE) so the stage CASE stays
    small enough to evaluate fast over millions of rows and to embed in rule queries.
    """

    at: ColumnElement
    member_since: ColumnElement  # users.member_since, which may lie after T
    signup_at: ColumnElement  # the first signup event at or before T
    first_seen_at: ColumnElement
    last_seen_at: ColumnElement  # the latest event of any kind at or before T
    purchases: ColumnElement
    last_purchase_at: ColumnElement
    first_purchase_at: ColumnElement
    total_spent: ColumnElement
    member_tier: ColumnElement

    @property
    def is_member(self) -> ColumnElement:
        # NULL-safe: `seen` is negated, and NOT (NULL) would not be true.
        member_since_passed = sa.and_(self.member_since.is_not(None), self.member_since <= self.at)
        return sa.or_(self.signup_at.is_not(None), member_since_passed)

    @property
    def seen(self) -> ColumnElement:
        return sa.or_(self.first_seen_at.is_not(None), self.is_member)

    @property
    def signed_up_at(self) -> ColumnElement:
        """The earliest of the signup event and a member_since at or before T."""
        use_member_since = sa.and_(
            self.member_since <= self.at,
            sa.or_(self.signup_at.is_(None), self.member_since < self.signup_at),
        )
        return sa.case((use_member_since, self.member_since), else_=self.signup_at)

    def inactive_since(self, cutoff: ColumnElement) -> ColumnElement:
        """No activity at or after `cutoff` (a cutoff at or before T).

        Activity is any event, and the signup: a member imported from a CRM may have a
        member_since and no event at all. Written without CASE (see the class note);
        for a seen user at least one of the two dates exists.
        """
        return sa.and_(
            sa.or_(self.last_seen_at.is_(None), self.last_seen_at < cutoff),
            sa.or_(
                self.member_since.is_(None),
                self.member_since < cutoff,
                self.member_since > self.at,
            ),
        )

    @property
    def last_active_at(self) -> ColumnElement:
        """The instant `inactive_since` measures from: latest event or signup."""
        member_since = sa.case((self.member_since <= self.at, self.member_since))
        return _latest(self.last_seen_at, member_since)


def _facts(users: FromClause, profiles: FromClause, as_of: datetime) -> _Facts:
    return _Facts(
        at=_instant(as_of),
        member_since=users.c.member_since,
        signup_at=profiles.c.signup_at,
        first_seen_at=profiles.c.first_seen_at,
        last_seen_at=profiles.c.last_seen_at,
        purchases=sa.func.coalesce(profiles.c.purchase_count, 0),
        last_purchase_at=profiles.c.last_purchase_at,
        first_purchase_at=profiles.c.first_purchase_at,
        total_spent=sa.func.coalesce(profiles.c.total_spent, 0),
        member_tier=users.c.member_tier,
    )


def _conditions(
    facts: _Facts, as_of: datetime, settings: LifecycleSettings
) -> dict[str, ColumnElement]:
    """stage -> the condition that puts a user there, assuming no earlier stage holds."""
    churn_cutoff = _instant(as_of - timedelta(days=settings.churned_days))
    lapse_cutoff = _instant(as_of - timedelta(days=settings.lapsed_days))
    new_cutoff = _instant(as_of - timedelta(days=settings.new_visitor_days))
    bought = facts.purchases > 0
    # Cutoffs compare strictly: before the cutoff = strictly more than N days before T.
    vip = facts.total_spent >= settings.vip_total_spent
    if settings.vip_tiers:
        vip = sa.or_(vip, facts.member_tier.in_(settings.vip_tiers))
    return {
        # Any activity keeps a user out of churned, whatever they did before.
        "churned": facts.inactive_since(churn_cutoff),
        # Buyers lapse by their purchases (visiting without buying does not help); a
        # member who never bought has no purchase clock, so their activity is the clock.
        # Anonymous visitors never lapse: they are prospects until they churn.
        "lapsed_member": sa.or_(
            sa.and_(bought, facts.last_purchase_at < lapse_cutoff),
            sa.and_(~bought, facts.is_member, facts.inactive_since(lapse_cutoff)),
        ),
        "vip": vip,
        "repeat_buyer": facts.purchases >= 2,
        "first_purchase": facts.purchases == 1,
        "registered": facts.is_member,
        # Reached only by users who never signed up, whose first_seen_at is an event.
        "new_visitor": facts.first_seen_at >= new_cutoff,
        "prospect": sa.true(),
    }


def stage_case(
    users: FromClause,
    profiles: FromClause,
    *,
    as_of: datetime,
    settings: LifecycleSettings,
) -> ColumnElement[str | None]:
    """Each user's stage at `as_of` as a SQL CASE; NULL for users not yet seen.

    `users` is the users table (or an alias) and `profiles` a selectable with the
    profile columns as of `as_of` (e.g. `profiles_as_of(connection, as_of)`), joined
    by the caller with a LEFT OUTER JOIN on user_id.
    """
    facts = _facts(users, profiles, as_of)
    conditions = _conditions(facts, as_of, settings)
    whens = [(~facts.seen, sa.null())]
    whens += [(conditions[stage], sa.literal(stage)) for stage in STAGES]
    # Typed explicitly: the first branch is NULL, which would leave the CASE untyped.
    return sa.type_coerce(sa.case(*whens), sa.String())


def _entry_instant(
    facts: _Facts,
    conditions: dict[str, ColumnElement],
    *,
    now: datetime,
    settings: LifecycleSettings,
) -> ColumnElement:
    """When the user entered their stage, where the definition says it; else `now`.

    Mirrors the stage CASE branch for branch (instead of comparing against the stage
    name) so that each definition is evaluated once per user.
    """
    at = _instant(now)
    last_active = facts.last_active_at
    # Lapsing begins when the clock of the definition ran out: the last purchase for a
    # buyer, the last activity for a member who never bought.
    lapse_from = sa.case((facts.purchases > 0, facts.last_purchase_at), else_=last_active)
    natural = {
        "churned": add_days(last_active, settings.churned_days),
        "lapsed_member": add_days(lapse_from, settings.lapsed_days),
        "first_purchase": facts.first_purchase_at,
        "registered": facts.signed_up_at,
        "new_visitor": facts.first_seen_at,
    }
    whens = [(~facts.seen, sa.null())]
    whens += [(conditions[stage], natural.get(stage, at)) for stage in STAGES]
    return sa.type_coerce(sa.case(*whens), UTCDateTime())


def stages_as_of(connection: Connection, settings: Settings, as_of: datetime) -> Select:
    """SELECT user_id, stage for every user as of `as_of` (stage NULL: not yet seen).

    Only events at or before `as_of` count (profiles derived as of T when needed).
    """
    profiles = profiles_as_of(connection, as_of)
    return sa.select(
        users_table.c.id.label("user_id"),
        stage_case(users_table, profiles, as_of=as_of, settings=settings.lifecycle).label("stage"),
    ).select_from(users_table.outerjoin(profiles, profiles.c.user_id == users_table.c.id))


def current_stage_rows(
    connection: Connection, settings: Settings, now: datetime, *, only: Select | None = None
):
    """A CTE: user_id, stage, entered_at (natural entry instant, may be NULL) at `now`.

    MATERIALIZED: the refresh reads these columns several times per row, and an
    inlined CASE would be re-evaluated for each reference.
    """
    profiles = profiles_as_of(connection, now)
    facts = _facts(users_table, profiles, now)
    conditions = _conditions(facts, now, settings.lifecycle)
    stage = stage_case(users_table, profiles, as_of=now, settings=settings.lifecycle)
    entered = _entry_instant(facts, conditions, now=now, settings=settings.lifecycle)
    query = sa.select(
        users_table.c.id.label("user_id"), stage.label("stage"), entered.label("entered_at")
    ).select_from(users_table.outerjoin(profiles, profiles.c.user_id == users_table.c.id))
    if only is not None:
        query = query.where(users_table.c.id.in_(only))
    return query.cte("computed").prefix_with("MATERIALIZED")


def refresh_stages(
    connection: Connection, settings: Settings, now: datetime, *, steady: bool = False
) -> StageRefresh:
    """Record every stage change as of `now` in stage_memberships, set-based.

    A user whose stage differs from their open row (or who has none) gets a new row
    (entered_at where the definition gives it, recorded_at = now) and the old row is
    closed at that instant. Calling it twice at the same `now` changes nothing, so a
    stage trigger fires once per row. Run it inside the caller's transaction.

    `steady` (the daemon's steady ticks) also records when the next date crosses a
    threshold, so that the next steady tick can tell with `stages_unchanged` that it
    has nothing to refresh.
    """
    now = ensure_aware(now)
    fingerprint = _settings_hash(settings.lifecycle)
    _HORIZONS.pop(connection.engine, None)  # this refresh may change what it described
    if connection.dialect.name == "postgresql":
        # Two refreshes at once would both see "no open row" and insert twice; SQLite's
        # BEGIN IMMEDIATE already serialises writers.
        connection.exec_driver_sql("LOCK TABLE stage_memberships IN SHARE ROW EXCLUSIVE MODE")
    mark = _read_mark(connection)
    if mark is not None and mark.as_of > now:
        # Another daemon refreshed to a later instant while this one waited for the
        # lock: refreshing to an earlier `now` would rewrite history backwards.
        return StageRefresh(now=now)
    incremental = mark is not None and mark.settings_hash == fingerprint and mark.as_of <= now
    dirty = _snapshot_dirty(connection)
    only = (
        _candidates(connection, settings.lifecycle, mark.as_of, now, dirty) if incremental else None
    )
    computed = current_stage_rows(connection, settings, now, only=only)
    open_rows = memberships.alias("open_row")
    at = _instant(now)
    natural = sa.case(
        (computed.c.entered_at.is_(None), at),
        (computed.c.entered_at > at, at),
        else_=computed.c.entered_at,
    )
    # Only activity ends churned (or a never-buyer's lapse), so a user leaving it for a
    # stage whose natural instant predates the stay (lapsed_member by an old purchase,
    # registered by the signup) came back: the new stay starts at their first event
    # after the old one began. Indexed by user; evaluated only for those rows.
    returns: FromClause | None = None
    if users_distributed(connection):
        # Citus refuses a correlated subquery when the FROM clause holds a CTE: the
        # same instant, pre-aggregated per user over the open churned/lapsed rows (a
        # join co-located on user_id) and joined to the changes by user.
        stay = memberships.alias("stay")
        returns = (
            sa.select(
                events_table.c.user_id,
                sa.func.min(events_table.c.occurred_at).label("returned_at"),
            )
            .join(
                stay,
                sa.and_(
                    stay.c.user_id == events_table.c.user_id,
                    stay.c.exited_at.is_(None),
                    stay.c.stage.in_(("churned", "lapsed_member")),
                    events_table.c.occurred_at > stay.c.entered_at,
                ),
            )
            .where(events_table.c.occurred_at <= at)
            .group_by(events_table.c.user_id)
            .subquery("returns")
        )
        returned_at: ColumnElement = returns.c.returned_at
    else:
        returned_at = (
            sa.select(sa.func.min(events_table.c.occurred_at))
            .where(
                events_table.c.user_id == computed.c.user_id,
                events_table.c.occurred_at > open_rows.c.entered_at,
                events_table.c.occurred_at <= at,
            )
            .correlate_except(events_table)
            .scalar_subquery()
        )
    entered_at = sa.case(
        (open_rows.c.entered_at.is_(None), natural),
        (natural >= open_rows.c.entered_at, natural),
        (
            open_rows.c.stage.in_(("churned", "lapsed_member")),
            sa.func.coalesce(returned_at, open_rows.c.entered_at),
        ),
        # History stays monotone even when late events move a natural entry instant
        # before the previous entry: the new stay starts no earlier than the old one.
        else_=open_rows.c.entered_at,
    )
    changes = (
        sa.select(
            computed.c.user_id,
            computed.c.stage,
            entered_at,
            sa.null(),
            _instant(now),
        )
        .select_from(
            _with_returns(
                computed.outerjoin(
                    open_rows,
                    sa.and_(
                        open_rows.c.user_id == computed.c.user_id, open_rows.c.exited_at.is_(None)
                    ),
                ),
                returns,
                computed.c.user_id,
            )
        )
        .where(
            computed.c.stage.is_not(None),
            sa.or_(open_rows.c.stage.is_(None), open_rows.c.stage != computed.c.stage),
        )
    )
    before = connection.execute(sa.select(sa.func.coalesce(sa.func.max(memberships.c.id), 0)))
    last_id = before.scalar_one()
    connection.execute(
        memberships.insert().from_select(
            ["user_id", "stage", "entered_at", "exited_at", "recorded_at"], changes
        )
    )
    # Close each superseded row at the instant its successor was entered.
    newer = memberships.alias("newer")
    successor = sa.and_(
        newer.c.user_id == memberships.c.user_id,
        newer.c.exited_at.is_(None),
        newer.c.id > memberships.c.id,
    )
    fresh = memberships.alias("fresh")
    entered_now = sa.select(fresh.c.user_id).where(fresh.c.id > last_id)
    closed = connection.execute(
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
    counts = connection.execute(
        sa.select(memberships.c.stage, sa.func.count())
        .where(memberships.c.id > last_id)
        .group_by(memberships.c.stage)
    ).all()  # fetched now: SQLite cannot drop a table while a cursor is open
    # Only the flags this refresh read: a user dirtied by an ingest that committed in
    # the meantime keeps the flag and is looked at by the next refresh.
    connection.execute(
        users_table.update()
        .where(users_table.c.id.in_(sa.select(dirty.c.id)))
        .values(stage_dirty=False)
    )
    dirty.drop(connection)
    _write_mark(connection, now, fingerprint)
    if steady and _horizon_worth_it(connection.engine) and is_current(connection, now):
        _HORIZONS[connection.engine] = _Horizon(
            as_of=now,
            settings_hash=fingerprint,
            next_crossing=_next_crossing(connection, settings.lifecycle, now),
        )
    return StageRefresh(now=now, entered={stage: n for stage, n in counts}, exited=closed)


def _with_returns(
    joined: FromClause, returns: FromClause | None, user_id: ColumnElement
) -> FromClause:
    """`joined`, left-joined with the per-user return instants when there are any."""
    if returns is None:
        return joined
    return joined.outerjoin(returns, returns.c.user_id == user_id)


@dataclass
class _Horizon:
    """After the refresh at `as_of`: the earliest later instant at which a stored date
    crosses a threshold (None: none ever will). Until then, a user's stage can only
    change through their data, which flags them stage_dirty."""

    as_of: datetime
    settings_hash: str
    next_crossing: datetime | None
    saved: int = 0  # refreshes it let a tick skip


# Computing a horizon reads every user (two aggregate scans). With hundreds of
# thousands of users some date crosses a threshold nearly every minute, so a horizon
# passed before it saved a single refresh makes the next ones skip computing it.
HORIZON_BACKOFF = 10
_BACKOFF: weakref.WeakKeyDictionary[sa.Engine, int] = weakref.WeakKeyDictionary()


def _horizon_worth_it(engine: sa.Engine) -> bool:
    remaining = _BACKOFF.get(engine, 0)
    if remaining:
        _BACKOFF[engine] = remaining - 1
    return not remaining


# Per database, in this process: kept in memory, not in the store, so that nothing but
# this process's own latest steady refresh can vouch for it. Any other refresh (another
# daemon's, a `nudge run --once`) moves the mark past `as_of` and voids it.
_HORIZONS: weakref.WeakKeyDictionary[sa.Engine, _Horizon] = weakref.WeakKeyDictionary()


def stages_unchanged(connection: Connection, settings: Settings, now: datetime) -> bool:
    """Whether a refresh at `now` would provably record nothing (a few cheap reads):
    this process's latest steady refresh is still the last one, no user is flagged
    stage_dirty, and no date crosses a threshold between that refresh and `now`."""
    now = ensure_aware(now)
    fingerprint = _settings_hash(settings.lifecycle)
    horizon = _HORIZONS.get(connection.engine)
    if horizon is None or horizon.settings_hash != fingerprint:
        return False
    if horizon.next_crossing is not None and horizon.next_crossing <= now:
        if not horizon.saved:
            _BACKOFF[connection.engine] = HORIZON_BACKOFF
        return False
    mark = _read_mark(connection)
    if mark is None or mark.as_of != horizon.as_of or mark.settings_hash != fingerprint:
        return False
    # The maintained profiles must describe `now` (an event dated after the horizon's
    # refresh would make a user's profile as of now move without a flag).
    if not is_current(connection, now):
        return False
    flagged = sa.select(users_table.c.id).where(users_table.c.stage_dirty.is_(True))
    if connection.execute(sa.select(sa.exists(flagged))).scalar():
        return False
    horizon.saved += 1
    return True


def _thresholds(settings: LifecycleSettings, profiles: FromClause):
    """(date column, days): a user may change stage when date + days passes, and only
    then (the crossings `_candidates` looks for)."""
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


def _next_crossing(
    connection: Connection, settings: LifecycleSettings, after: datetime
) -> datetime | None:
    """The earliest date + days at or after `after` over every user: one aggregate read
    per table (the maintained profiles, current at `after`). At, not only after: a
    stage changes strictly after its threshold, so a threshold equal to `after` still
    moves a user just after this refresh."""
    from engine.store.people import Profile

    profiles = Profile.__table__
    earliest: list[datetime] = []
    for table in (users_table, profiles):
        pairs = [(c, d) for c, d in _thresholds(settings, profiles) if c.table is table]
        mins = [
            sa.type_coerce(
                sa.func.min(sa.case((column >= _instant(after - timedelta(days=days)), column))),
                UTCDateTime(),
            )
            for column, days in pairs
        ]
        row = connection.execute(sa.select(*mins).select_from(table)).one()
        earliest += [
            ensure_aware(value) + timedelta(days=days)
            for value, (_, days) in zip(row, pairs, strict=True)
            if value is not None
        ]
    return min(earliest, default=None)


MARK = "stages"
# Bumped whenever a definition changes meaning, so that the first refresh after an
# upgrade recomputes everyone instead of trusting stages the old definitions recorded.
# 1 (unversioned): the thresholds alone. 2: churned means inactive (any event),
# and members who never bought lapse by inactivity.
DEFINITIONS_VERSION = 2


def _settings_hash(lifecycle: LifecycleSettings) -> str:
    fingerprint = f"{lifecycle.model_dump_json()} definitions={DEFINITIONS_VERSION}"
    return hashlib.sha256(fingerprint.encode()).hexdigest()


def _read_mark(connection: Connection):
    return connection.execute(sa.select(marks).where(marks.c.name == MARK)).first()


def _write_mark(connection: Connection, now: datetime, fingerprint: str) -> None:
    values = {"as_of": now, "settings_hash": fingerprint}
    updated = connection.execute(marks.update().where(marks.c.name == MARK).values(values))
    if updated.rowcount == 0:
        connection.execute(marks.insert().values(name=MARK, **values))


_DIRTY = sa.Table(
    "nudge_stage_dirty",
    sa.MetaData(),
    sa.Column("id", sa.String(128), primary_key=True),
    prefixes=["TEMPORARY"],
)


def _snapshot_dirty(connection: Connection) -> sa.Table:
    """The users flagged stage_dirty now, copied into a temporary table.

    The refresh recomputes exactly these (plus time-driven crossings) and clears
    exactly these flags. On PostgreSQL the rows are locked for the transaction: an
    ingest for one of them waits and flags it again after this refresh commits, so
    its new data is never cleared unseen. (SQLite serialises writers already.) The
    table has a fixed name (temporary tables are private to a connection) so that
    the statements using it compile once.
    """
    table = _DIRTY
    table.drop(connection, checkfirst=True)
    table.create(connection)
    flagged = sa.select(users_table.c.id).where(users_table.c.stage_dirty.is_(True))
    if users_distributed(connection):
        # Citus refuses a multi-shard FOR UPDATE: the same advisory locks as ingest,
        # taken in the same order (engine/store/profiles.py).
        ids = sorted(connection.execute(flagged).scalars())
        lock_users_by_advisory_lock(connection, ids)
        if ids:
            connection.execute(table.insert(), [{"id": user_id} for user_id in ids])
        return table
    if connection.dialect.name == "postgresql":
        # In id order, as ingest locks them (engine/store/profiles.py): no deadlock.
        flagged = flagged.order_by(users_table.c.id).with_for_update()
    connection.execute(table.insert().from_select(["id"], flagged))
    return table


def _candidates(
    connection: Connection,
    settings: LifecycleSettings,
    since: datetime,
    now: datetime,
    dirty: sa.Table,
) -> Select:
    """Users whose stage may differ from the last refresh at `since`.

    Either their data changed (ingest marks them stage_dirty) or time alone moved them:
    one of their dates crossed a threshold in [since, now] — a last purchase becoming
    90 days old, a last event or signup becoming 90 or 365 days old (inactivity), a
    first visit becoming 30 days old, a future member_since arriving. Everyone else
    provably keeps their stage: the definitions read no other date (first and signup
    events are never later than the last event, so they need no clause of their own).
    """
    profiles = profiles_as_of(connection, now)
    u = users_table

    def crossed(column: ColumnElement, days: int) -> ColumnElement[bool]:
        # From `since` inclusive: a stage changes strictly after its threshold, so a date
        # whose threshold fell exactly on the last refresh's instant had not moved yet.
        return sa.and_(
            column >= _instant(since - timedelta(days=days)),
            column <= _instant(now - timedelta(days=days)),
        )

    clauses = [u.c.id.in_(sa.select(dirty.c.id))]
    clauses += [crossed(column, days) for column, days in _thresholds(settings, profiles)]
    return (
        sa.select(u.c.id)
        .select_from(u.outerjoin(profiles, profiles.c.user_id == u.c.id))
        .where(sa.or_(*clauses))
    )


def stage_history(connection: Connection, user_id: str) -> list[dict]:
    """Every recorded stay of one user, oldest first."""
    rows = connection.execute(
        sa.select(
            memberships.c.stage,
            memberships.c.entered_at,
            memberships.c.exited_at,
            memberships.c.recorded_at,
        )
        .where(memberships.c.user_id == user_id)
        .order_by(memberships.c.entered_at, memberships.c.id)
    )
    return [dict(row._mapping) for row in rows]
