"""The trigger kinds by name, read from the `nudge.triggers` entry points.

Each entry point loads a TriggerKind (engine.triggers.base): anything with a `name`
equal to the entry point's, `occurrences(spec, ctx)` and `slot(spec, ctx)`, and
optionally `missed(spec, ctx)`. Nudge's own are its modules (`stage =
"engine.triggers.stage"` in pyproject.toml). Rule files can only name the built-in
four so far (engine.rules.models.Trigger); a plugin kind is reachable from code.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine.plugins import PluginRegistry
from engine.triggers.base import TriggerContext, TriggerKind, TriggerSpec

GROUP = "nudge.triggers"


def check_trigger_kind(entry_name: str, loaded: Any) -> TriggerKind:
    """What an entry point of `nudge.triggers` must load."""
    needed = ("occurrences", "slot")
    missing = [attr for attr in needed if not callable(getattr(loaded, attr, None))]
    if missing:
        raise TypeError(f"a trigger kind needs callables {', '.join(missing)}(spec, ctx)")
    name = getattr(loaded, "name", None)
    if name != entry_name:
        raise ValueError(f"the kind is named {name!r}, the entry point {entry_name!r}")
    return loaded


TRIGGER_KINDS: PluginRegistry[TriggerKind] = PluginRegistry(
    GROUP, "trigger kind", check=check_trigger_kind
)


def occurrences_for(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | None:
    return TRIGGER_KINDS[spec.kind].occurrences(spec, ctx)


def slot_for(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return TRIGGER_KINDS[spec.kind].slot(spec, ctx)


def missed_for(spec: TriggerSpec, ctx: TriggerContext) -> tuple[str, dict] | None:
    """A `missed` run to record (schedule slots older than misfire_grace), or None."""
    missed = getattr(TRIGGER_KINDS[spec.kind], "missed", None)
    return missed(spec, ctx) if missed is not None else None
