"""The action kinds a rule can use, by name: built-ins plus any a plugin registers.

kind = get_action_kind("email")          # NudgeError with "did you mean" if unknown
params = kind.validate({"creative": "winback"})
"""

from __future__ import annotations

import difflib

from engine.actions import audience, coupon, email, sms, tag, webhook
from engine.actions.base import ActionKind
from engine.errors import NudgeError


class UnknownActionKindError(NudgeError):
    """Raised when a rule or an outbox row names an action kind nobody registered."""


class DuplicateActionKindError(NudgeError):
    """Raised when a plugin registers a kind under a name already taken."""


BUILTIN_KINDS: tuple[ActionKind, ...] = (
    coupon.KIND,
    audience.KIND,
    email.KIND,
    sms.KIND,
    webhook.KIND,
    tag.KIND,
)

ACTION_KINDS: dict[str, ActionKind] = {kind.name: kind for kind in BUILTIN_KINDS}


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


def register_action_kind(kind: ActionKind) -> ActionKind:
    """Add a plugin's kind; a name already registered is an error, never a silent override."""
    if kind.name in ACTION_KINDS:
        raise DuplicateActionKindError(f"action kind {kind.name!r} is already registered")
    if not kind.name.isidentifier() or kind.name != kind.name.lower():
        raise NudgeError(f"action kind name {kind.name!r} must be a snake_case identifier")
    ACTION_KINDS[kind.name] = kind
    return kind


def unregister_action_kind(name: str) -> None:
    """Remove a plugin kind (tests and plugin reloads); built-ins stay."""
    if any(kind.name == name for kind in BUILTIN_KINDS):
        raise NudgeError(f"built-in action kind {name!r} cannot be removed")
    ACTION_KINDS.pop(name, None)
