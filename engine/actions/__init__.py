"""Action kinds: what a rule does for one user (coupon, audience, email, sms, webhook, tag)."""

# The plugin API (docs/plugins.md): defined in engine/action_kinds.py, below rules,
# planning and delivery, which look kinds up by name.
from engine.action_kinds import (
    ACTION_KINDS,
    ActionKind,
    ActionParams,
    get_action_kind,
    register_action_kind,
    unregister_action_kind,
)

__all__ = [
    "ACTION_KINDS",
    "ActionKind",
    "ActionParams",
    "get_action_kind",
    "register_action_kind",
    "unregister_action_kind",
]
