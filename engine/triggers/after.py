"""`after: welcome-email` + `wait: 3d` — a follow-up to another rule's planned action.

Occurrences are the followed rule's planned decisions whose wait has elapsed at T;
the followed decision's id is the occurrence key, so each is followed up once. The
rule's `unless` is what stops a follow-up (for example, "bought again"). Decisions
more than LOOKBACK past their wait are not followed up any more.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from engine.store.planning import Decision
from engine.triggers.base import TriggerContext, TriggerSpec, instant_slot, key_text

decisions = Decision.__table__
name = "after"
LOOKBACK = timedelta(days=7)


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select:
    d = decisions.alias("followed")
    wait = spec.wait or timedelta()
    due_by = ctx.at - wait
    return sa.select(
        d.c.user_id,
        key_text("after", d.c.id).label("occurrence_key"),
        d.c.decided_at.label("occurred_at"),
        sa.null().label("event_id"),
    ).where(
        d.c.rule_id == spec.value,
        d.c.outcome == "planned",
        d.c.decided_at <= due_by,
        d.c.decided_at > due_by - LOOKBACK,
    )


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return instant_slot(ctx.at)
