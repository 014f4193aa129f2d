"""The trigger kinds by name."""

from __future__ import annotations

import sqlalchemy as sa

from engine.triggers import after, event, schedule, stage
from engine.triggers.base import TriggerContext, TriggerSpec

TRIGGER_KINDS = {module.name: module for module in (stage, event, schedule, after)}


def occurrences_for(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | None:
    return TRIGGER_KINDS[spec.kind].occurrences(spec, ctx)


def slot_for(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return TRIGGER_KINDS[spec.kind].slot(spec, ctx)


def missed_for(spec: TriggerSpec, ctx: TriggerContext) -> tuple[str, dict] | None:
    """A `missed` run to record (schedule slots older than misfire_grace), or None."""
    missed = getattr(TRIGGER_KINDS[spec.kind], "missed", None)
    return missed(spec, ctx) if missed is not None else None
