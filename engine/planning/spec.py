"""A rule reduced to what planning needs (PlanSpec), built from a loaded Rule.

Keeping the pipeline on this small, typed view means the SQL code does not care how
the YAML is spelt, and tests can build specs directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.triggers.base import TriggerSpec

# Channels that reach a person, and the consent each needs (DESIGN: "Consent is not
# optional"). Other channels (coupon, tag, webhook) need no consent of their own.
CONTACT_CHANNELS = ("email", "sms", "audience")


@dataclass(frozen=True)
class ActionPlan:
    """One action of a rule for one variant: kind, channel and the merged params."""

    kind: str
    channel: str
    params: dict[str, Any]


@dataclass(frozen=True)
class PlanSpec:
    rule_id: str
    rule_hash: str
    trigger: TriggerSpec
    status: str = "active"  # active | shadow | paused
    when: tuple[Any, ...] = ()  # condition expressions (engine.conditions)
    unless: tuple[Any, ...] = ()
    once_per_user: bool = False
    every: timedelta | None = None
    flight_start: datetime | None = None
    flight_end: datetime | None = None
    priority: int = 0
    exclusive_group: str | None = None
    cap_max: int | None = None
    cap_per: timedelta | None = None
    holdout: float = 0.0
    variants: dict[str, float] = field(default_factory=dict)  # name -> weight, file order
    # Actions per variant (None = no experiment variants).
    actions: dict[str | None, tuple[ActionPlan, ...]] = field(default_factory=dict)
    send_window: tuple[str, str] | None = None
    event_trigger: bool = False

    @property
    def channels(self) -> set[str]:
        return {action.channel for plans in self.actions.values() for action in plans}

    @property
    def contact_channels(self) -> list[str]:
        return [channel for channel in CONTACT_CHANNELS if channel in self.channels]

    def in_flight(self, at: datetime) -> bool:
        if self.flight_start is not None and at < self.flight_start:
            return False
        return not (self.flight_end is not None and at >= self.flight_end)
