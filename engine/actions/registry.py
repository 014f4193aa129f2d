"""The action kinds a rule can use, by name: built-ins plus any a plugin registers.

kind = get_action_kind("email")          # NudgeError with "did you mean" if unknown
params = kind.validate({"creative": "winback"})

Every kind, Nudge's own included, is an entry point of the group `nudge.actions`
whose value is an ActionKind (`coupon = "engine.actions.coupon:KIND"` in
pyproject.toml); a shop's package declares its own the same way (docs/plugins.md).
They are read once, on first use (engine.plugins).
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from engine.actions.base import ActionKind
from engine.errors import NudgeError
from engine.plugins import PluginRegistry

GROUP = "nudge.actions"
# The distribution whose entry points are the built-in kinds.
BUILTIN_DISTRIBUTION = "nudge"


class UnknownActionKindError(NudgeError):
    """Raised when a rule or an outbox row names an action kind nobody registered."""


class DuplicateActionKindError(NudgeError):
    """Raised when a plugin registers a kind under a name already taken."""


def _check_name(name: str) -> None:
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"action kind name {name!r} must be a snake_case identifier")


def check_action_kind(entry_name: str, loaded: Any) -> ActionKind:
    """What an entry point of `nudge.actions` must load: an ActionKind named like it."""
    if not isinstance(loaded, ActionKind):
        raise TypeError(f"loaded {type(loaded).__name__}, expected engine.actions.ActionKind")
    if loaded.name != entry_name:
        raise ValueError(f"the kind is named {loaded.name!r}, the entry point {entry_name!r}")
    _check_name(loaded.name)
    if not (isinstance(loaded.params, type) and issubclass(loaded.params, BaseModel)):
        raise TypeError("ActionKind.params must be a pydantic model (an ActionParams subclass)")
    if loaded.deliver is not None and not callable(loaded.deliver):
        raise TypeError("ActionKind.deliver must be callable: deliver(ctx, actions) -> [Outcome]")
    return loaded


ACTION_KINDS: PluginRegistry[ActionKind] = PluginRegistry(
    GROUP, "action kind", check=check_action_kind
)


def get_action_kind(name: str) -> ActionKind:
    """The kind called `name`; raises UnknownActionKindError with a suggestion."""
    try:
        return ACTION_KINDS[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(ACTION_KINDS), n=1)
    if close:
        raise UnknownActionKindError(f"unknown action kind {name!r} (did you mean {close[0]!r}?)")
    known = ", ".join(sorted(ACTION_KINDS))
    raise UnknownActionKindError(f"unknown action kind {name!r}; known kinds: {known}")


def is_builtin(name: str) -> bool:
    return ACTION_KINDS.distribution(name) == BUILTIN_DISTRIBUTION


def register_action_kind(kind: ActionKind) -> ActionKind:
    """Add a kind in code (tests, a plugin not installed as a distribution); a name
    already registered is an error, never a silent override."""
    if kind.name in ACTION_KINDS:
        raise DuplicateActionKindError(f"action kind {kind.name!r} is already registered")
    try:
        _check_name(kind.name)
    except ValueError as exc:
        raise NudgeError(str(exc)) from None
    ACTION_KINDS[kind.name] = kind
    return kind


def unregister_action_kind(name: str) -> None:
    """Remove a plugin kind (tests and plugin reloads); built-ins stay."""
    if is_builtin(name):
        raise NudgeError(f"built-in action kind {name!r} cannot be removed")
    ACTION_KINDS.pop(name, None)
