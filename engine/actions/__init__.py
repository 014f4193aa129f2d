"""Action kinds: what a rule does for one user (coupon, audience, email, sms, webhook, tag)."""

from engine.actions.base import ActionKind, ActionParams
from engine.actions.registry import (
    ACTION_KINDS,
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
