"""The stage definitions as SQL: one CASE for the stage, one for the entry instant.

The definitions are tried in `STAGES` order and the first that holds wins
(docs/lifecycle.md has the table):

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
The dates these conditions compare with T are listed in engine/lifecycle/crossings.py
(`thresholds`): a definition reading another date must be added there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, FromClause, Select

from engine.clock import ensure_aware
from engine.config import LifecycleSettings, Settings
from engine.lifecycle.tables import users_table
from engine.store.profiles import profiles_as_of
from engine.store.sql import add_seconds
from engine.store.types import UTCDateTime

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


def add_days(instant: ColumnElement, days: int) -> ColumnElement:
    """`instant + days`, exact to the microsecond (engine/store/sql.py)."""
    return add_seconds(instant, sa.literal(days * 86_400, sa.Integer))


def instant(value: datetime) -> ColumnElement:
    """An instant as a bound parameter of the store's UTC type."""
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
        at=instant(as_of),
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
    churn_cutoff = instant(as_of - timedelta(days=settings.churned_days))
    lapse_cutoff = instant(as_of - timedelta(days=settings.lapsed_days))
    new_cutoff = instant(as_of - timedelta(days=settings.new_visitor_days))
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
    at = instant(now)
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
    """A CTE: user_id, stage, entered_at (natural entry instant, may be NULL) at `now`,
    for every user or for the ids `only` selects.

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
