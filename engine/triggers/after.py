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
name = "after"
LOOKBACK = timedelta(days=7)


def followed_occurrence(d: sa.FromClause) -> sa.ColumnElement:
    """When the followed occurrence happened (decisions older than schema 0002 have
    only their decision time)."""
    return sa.func.coalesce(d.c.occurred_at, d.c.decided_at)


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select:
    d = decisions.alias("followed")
    wait = spec.wait or timedelta()
    due_by = ctx.at - wait
    anchor = followed_occurrence(d)
    dialect = ctx.connection.dialect.name
    return sa.select(
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
    ).where(
        d.c.rule_id == spec.value,
        d.c.outcome == "planned",
        anchor <= due_by,
        anchor > due_by - LOOKBACK,
        reached(d.c.id),
        *_changed(d, anchor, wait, ctx),
    )


def _changed(d, anchor, wait, ctx: TriggerContext) -> list:
    """Only decisions that fell due, or were made, since `changed_since` (a late-loaded
    occurrence is decided now but was due long ago)."""
    if ctx.changed_since is None:
        return []
    return [sa.or_(anchor > ctx.changed_since - wait, d.c.decided_at > ctx.changed_since)]


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return instant_slot(ctx.at)
