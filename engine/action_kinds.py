"""What every action kind is made of, and the kinds a rule can use, by name.

A kind is a small module (`engine/actions/coupon.py`, `email.py`, ...) exposing `KIND`:
a parameter schema, a default channel, a deliver step. Rule files validate their
`actions:` entries against `KIND.params`, and the dispatcher calls `KIND.deliver` for
each claimed outbox row of that kind.

kind = get_action_kind("email")          # NudgeError with "did you mean" if unknown
params = kind.validate({"creative": "winback"})

Every kind, Nudge's own included, is an entry point of the group `nudge.actions`
whose value is an ActionKind (`coupon = "engine.actions.coupon:KIND"` in
pyproject.toml); a shop's package declares its own the same way (docs/plugins.md).
They are read once, on first use (engine.plugins). This module sits below rules,
planning and delivery, which look kinds up here by name; the kinds themselves
(engine/actions/) sit above delivery, whose context and channels they use. Plugin
authors import the same names from `engine.actions`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from engine.errors import NudgeError
from engine.plugins import PluginRegistry

# Names of creatives, audiences and endpoints: lowercase words joined by - or _,
# so they are safe as folder names, file names and URL parts.
SLUG_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=64)]

# The surfaces an email renders, in order: the email kind renders them
# (engine/actions/email.py) and the creative checks require them of an email's
# creative (engine/creatives/checks.py).
EMAIL_SURFACES = ("email_subject", "email_text", "email_html")


class ActionParams(BaseModel):
    """Base of every kind's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# deliver(ctx, actions) -> outcomes: (DeliveryContext, list[PlannedAction]) -> list[Outcome]
# of engine/delivery/context.py, a layer above; typed loosely so this stays below it.
DeliverHook = Callable[[Any, list[Any]], list[Any]]


@dataclass(frozen=True)
class ActionKind:
    """One kind of action a rule can take for a user.

    `name` is the YAML key under `actions:` and the outbox `kind`; `channel` is the
    outbox channel the planner writes by default (caps and backends are per channel);
    `consent` names the user flag the delivery policy re-checks at send time
    ("email" also requires no unsubscribe); `deliver` performs a batch of claimed
    actions of this kind and returns one Outcome per action, in order.
    """

    name: str
    channel: str
    params: type[ActionParams]
    description: str
    example: dict[str, Any] = field(default_factory=dict)
    consent: Literal["email", "sms", "ads"] | None = None
    deliver: DeliverHook | None = None

    def validate(self, raw: dict[str, Any]) -> ActionParams:
        """Parse a rule's YAML mapping for this kind (raises pydantic.ValidationError)."""
        return self.params.model_validate(raw)


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
