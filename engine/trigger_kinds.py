"""The trigger kinds by name: the `nudge.triggers` entry points.

This registry sits below the rule models (like engine/action_kinds.py) because a rule
file may name a plugin's kind, `trigger: {cart_abandoned: 1h}`: the models, the
condition catalog and `nudge check` look kinds up here by name, while the kinds' SQL
lives above them, in engine/triggers/ and in plugins (docs/plugins.md).

An entry point loads an object, usually a module, with:
- `name`: the entry point's name, which is also the key a rule file writes;
- `occurrences(spec, ctx)` and `slot(spec, ctx)` (engine.triggers.base.TriggerKind);
- optionally `missed(spec, ctx)`, and for a plugin kind `validate(value) -> str` (raise
  ValueError to reject a rule file's value; what it returns is stored) and
  `description` (shown by editors through rule.schema.json).
"""

from __future__ import annotations

from typing import Any

from engine.plugins import PluginRegistry

GROUP = "nudge.triggers"
# The kinds whose rule-file syntax is Nudge's own (engine.rules.trigger.Trigger).
BUILT_IN = ("stage", "event", "schedule", "after")


def check_trigger_kind(entry_name: str, loaded: Any) -> Any:
    """What an entry point of `nudge.triggers` must load."""
    needed = ("occurrences", "slot")
    missing = [attr for attr in needed if not callable(getattr(loaded, attr, None))]
    if missing:
        raise TypeError(f"a trigger kind needs callables {', '.join(missing)}(spec, ctx)")
    name = getattr(loaded, "name", None)
    if name != entry_name:
        raise ValueError(f"the kind is named {name!r}, the entry point {entry_name!r}")
    validate = getattr(loaded, "validate", None)
    if validate is not None and not callable(validate):
        raise TypeError("`validate` must be a callable validate(value) -> str")
    return loaded


TRIGGER_KINDS: PluginRegistry[Any] = PluginRegistry(GROUP, "trigger kind", check=check_trigger_kind)


def plugin_trigger_kinds() -> tuple[str, ...]:
    """The registered kinds a rule file writes as `trigger: {<kind>: <value>}`."""
    return tuple(sorted(name for name in TRIGGER_KINDS if name not in BUILT_IN))


def validate_plugin_value(kind: str, value: Any) -> str:
    """A plugin kind's value from a rule file, as its `validate` accepts it (text)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"trigger {kind!r} takes one value (text or a number), e.g. {kind}: 1h; got {value!r}"
        )
    text = str(value)
    validate = getattr(TRIGGER_KINDS[kind], "validate", None)
    return validate(text) if validate is not None else text


def describe_plugin_kind(kind: str) -> str:
    description = getattr(TRIGGER_KINDS[kind], "description", None)
    return description if isinstance(description, str) else f"Trigger kind {kind!r} (plugin)."
