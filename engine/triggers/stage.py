"""`stage: lapsed_member` — fires once per entry into the stage.

An entry is a stage_memberships row (engine/lifecycle/ records them); its id is
the occurrence key, so a user who leaves and re-enters the stage is considered again,
and one who stays is considered once.

The first evaluation of a rule (or of a changed rule) sweeps everyone in the stage;
later ones only the entries recorded since the previous evaluation (the watermark),
so a steady-state tick reads a handful of rows instead of the whole stage.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.store.people import StageMembership
from engine.store.sql import epoch_seconds
from engine.triggers.base import TriggerContext, TriggerSpec, instant_slot, key_text, no_event

memberships = StageMembership.__table__
name = "stage"


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select:
    m = memberships
    query = sa.select(
        m.c.user_id,
        key_text("stage", m.c.id).label("occurrence_key"),
        m.c.entered_at.label("occurred_at"),
        m.c.entered_at.label("trigger_at"),
        no_event(),
        (
            sa.literal("stage:", sa.String)
            + m.c.stage
            + sa.literal(":", sa.String)
            + sa.cast(epoch_seconds(m.c.entered_at, ctx.connection.dialect.name), sa.String)
        ).label("occurrence_ref"),
    ).where(
        m.c.stage == spec.value,
        m.c.entered_at <= ctx.at,
        # Members at T: evaluation in the past sees the membership that was open then.
        sa.or_(m.c.exited_at.is_(None), m.c.exited_at > ctx.at),
    )
    if ctx.watermark is not None and ctx.watermark < ctx.at:
        # recorded_at, not entered_at: an entry's natural time (e.g. the day a member
        # crossed 90 days) can be older than the refresh that recorded it.
        query = query.where(m.c.recorded_at > ctx.watermark)
    return query


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return instant_slot(ctx.at)
