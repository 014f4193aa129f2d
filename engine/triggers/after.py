"""`after: welcome-email` + `wait: 3d` — a follow-up to another rule's action.

Occurrences are the followed rule's planned decisions whose wait has elapsed at T;
the followed decision's id is the occurrence key, so each is followed up once.

- The wait runs from the followed occurrence (the event's time, the stage's natural
  entry, the schedule slot, or when the followed follow-up itself fell due), not from
  when Nudge decided it: data loaded late, or a daemon that was down, acts at once
  instead of a whole wait later (DESIGN invariant 7).
- Only actions that reached, or are still on their way to, the user are followed:
  a decision whose messages were all skipped (unsubscribed, capped, `unless`...) or went
  dead is not followed up, even if its coupon was issued. Planned, claimed and sent
  actions count; they will be sent.
- The follow-up's trigger instant (`since="trigger"`) is the start of the chain: for
  `after: cart-seen`, the add-to-cart event that `cart-seen` followed.

Decisions more than LOOKBACK past their due time are not followed up any more.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from engine.store.planning import Decision
from engine.store.reach import reached
from engine.store.sql import plus_duration
from engine.triggers.base import TriggerContext, TriggerSpec, instant_slot, key_text, no_event

decisions = Decision.__table__
# Built once, not per statement: a table's alias builds a proxy of every column the
# first time its columns are read, which the daemon's idle tick paid for each rule.
_FOLLOWED = decisions.alias("followed")
name = "after"
LOOKBACK = timedelta(days=7)


def followed_occurrence(d: sa.FromClause) -> sa.ColumnElement:
    """When the followed occurrence happened: never NULL since schema 0007 (which gave
    older decisions their decision instant), so `(rule_id, outcome, occurred_at)` finds
    the decisions due in a window."""
    return d.c.occurred_at


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | sa.CompoundSelect:
    """The followed decisions due in the look-back window; with `changed_since`, only
    those that fell due since then, or were decided since then (a late-loaded
    occurrence is decided now but was due long ago).

    The second case is a separate, disjoint SELECT rather than an OR: each is then one
    index range (`(rule_id, outcome, occurred_at)`, `(rule_id, decided_at)`), where an
    OR let SQLite read the whole week of the followed rule's decisions every tick.
    """
    wait = spec.wait or timedelta()
    due_by = ctx.at - wait
    oldest = due_by - LOOKBACK
    if ctx.changed_since is None:
        return _due(spec, ctx, after=oldest, until=due_by)
    # Fell due since the previous tick looked.
    newly_due_after = max(oldest, ctx.changed_since - wait)
    newly_due = _due(spec, ctx, after=newly_due_after, until=due_by)
    if newly_due_after == oldest:
        return newly_due
    # Due earlier in the window, but decided only since then.
    late = _due(
        spec, ctx, after=oldest, until=min(due_by, newly_due_after), decided_after=ctx.changed_since
    )
    return sa.union_all(newly_due, late)


def _due(spec: TriggerSpec, ctx: TriggerContext, *, after, until, decided_after=None) -> sa.Select:
    """The followed rule's planned decisions that reached the user and whose followed
    occurrence is in (after, until] (and that were decided after `decided_after`)."""
    d = _FOLLOWED
    wait = spec.wait or timedelta()
    anchor = followed_occurrence(d)
    dialect = ctx.connection.dialect.name
    query = sa.select(
        d.c.user_id,
        key_text("after", d.c.id).label("occurrence_key"),
        plus_duration(anchor, wait, dialect).label("occurred_at"),
        sa.func.coalesce(d.c.trigger_at, anchor).label("trigger_at"),
        no_event(),
        (
            sa.literal("after:", sa.String)
            + d.c.rule_id
            + sa.literal(":", sa.String)
            + sa.func.coalesce(d.c.occurrence_ref, d.c.occurrence_key)
        ).label("occurrence_ref"),
    )
    if decided_after is None:
        window = [anchor > after, anchor <= until]
    else:
        # The few decided since then, found through `(rule_id, decided_at)`. The window
        # is written so that no index serves it (occurred_at is never NULL, so this is
        # the same test): SQLite, which plans without statistics, would otherwise
        # prefer the two-sided range and read most of the week again.
        unindexed = sa.func.coalesce(anchor, d.c.decided_at)
        window = [d.c.decided_at > decided_after, unindexed > after, unindexed <= until]
    return query.where(
        d.c.rule_id == spec.value, d.c.outcome == "planned", *window, reached(d.c.id)
    )


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return instant_slot(ctx.at)
