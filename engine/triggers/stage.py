"""`stage: lapsed_member` — fires once per entry into the stage.

An entry is a stage_memberships row (engine/lifecycle.py records them); its id is
the occurrence key, so a user who leaves and re-enters the stage is considered again,
and one who stays is considered once.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.store.people import StageMembership
from engine.triggers.base import TriggerContext, TriggerSpec, instant_slot, key_text

memberships = StageMembership.__table__
name = "stage"


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select:
    m = memberships
    return sa.select(
        m.c.user_id,
        key_text("stage", m.c.id).label("occurrence_key"),
        m.c.entered_at.label("occurred_at"),
        sa.null().label("event_id"),
    ).where(
        m.c.stage == spec.value,
        m.c.entered_at <= ctx.at,
        # Members at T: evaluation in the past sees the membership that was open then.
        sa.or_(m.c.exited_at.is_(None), m.c.exited_at > ctx.at),
    )


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return instant_slot(ctx.at)
