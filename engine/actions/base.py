"""What every action kind is made of: a parameter schema, a default channel, a deliver step.

A kind is a small module (`coupon.py`, `email.py`, ...) exposing `KIND`; the registry
lists them. Rule files validate their `actions:` entries against `KIND.params`, and the
dispatcher calls `KIND.deliver` for each claimed outbox row of that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

if TYPE_CHECKING:
    from engine.delivery.context import DeliveryContext, Outcome, PlannedAction

# Names of creatives, audiences and endpoints: lowercase words joined by - or _,
# so they are safe as folder names, file names and URL parts.
SLUG_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=64)]


class ActionParams(BaseModel):
    """Base of every kind's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


DeliverHook = Callable[["DeliveryContext", "list[PlannedAction]"], "list[Outcome]"]


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
