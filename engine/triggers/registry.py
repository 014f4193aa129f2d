"""Running a rule's trigger: its kind, looked up by name, gives the occurrences at T.

The registry itself (the `nudge.triggers` entry points) is engine/trigger_kinds.py,
below the rule models, which need the kinds' names to read a rule file. Nudge's own
kinds are its modules (`stage = "engine.triggers.stage"` in pyproject.toml).
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.trigger_kinds import TRIGGER_KINDS
from engine.triggers.base import TriggerContext, TriggerSpec


def occurrences_for(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | None:
    return TRIGGER_KINDS[spec.kind].occurrences(spec, ctx)


def slot_for(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return TRIGGER_KINDS[spec.kind].slot(spec, ctx)


def missed_for(spec: TriggerSpec, ctx: TriggerContext) -> tuple[str, dict] | None:
    """A `missed` run to record (schedule slots older than misfire_grace), or None."""
    missed = getattr(TRIGGER_KINDS[spec.kind], "missed", None)
    return missed(spec, ctx) if missed is not None else None
