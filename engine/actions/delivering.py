"""Helpers shared by the kinds' deliver hooks: params parsing and channel sending."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from engine.delivery.context import (
    DeliveryContext,
    DeliveryFailure,
    Outcome,
    PlannedAction,
    outcome_of_failure,
)


def parse_params(actions: Sequence[PlannedAction], model) -> tuple[list, dict[int, Outcome]]:
    """(action, params) pairs that validate, and dead outcomes for those that do not.

    A payload that no longer validates (a plugin changed, a row edited by hand) can
    never succeed: dead with the validation message, visible in `nudge status`.
    """
    good, bad = [], {}
    for action in actions:
        try:
            good.append((action, model.model_validate(action.params)))
        except ValidationError as exc:
            bad[action.id] = Outcome.dead("invalid_params", str(exc).replace("\n", "; "))
    return good, bad


# The outcome of an action the dispatcher withheld (stopping, or its claim was taken
# over): the dispatcher gives the row back or leaves it to its new holder, and never
# records this; it only matters to a context that withholds without doing so.
NOT_SENT = Outcome.retry("not sent: the dispatcher withheld it (stopping or claim lost)")


def send_each(
    ctx: DeliveryContext,
    items: Sequence[tuple[PlannedAction, Any]],
    build: Callable[[PlannedAction, Any], Any | Outcome],
) -> dict[int, Outcome]:
    """Build each message and hand it to the action's channel; one Outcome per action.

    When the context has a `before_send(action) -> bool` (the dispatcher's
    DispatchContext), it is asked just before each message is built: it moves
    `ctx.now` to the instant of this send (so a webhook-timestamp or an email Date is
    the time it leaves, not the time the batch was claimed), renews the claim's lease
    when due, and says False for an action that must not be sent (stopping, or the row
    was taken over by another dispatcher).
    """
    before_send = getattr(ctx, "before_send", None)
    outcomes: dict[int, Outcome] = {}
    for action, params in items:
        if before_send is not None and not before_send(action):
            outcomes[action.id] = NOT_SENT
            continue
        message = build(action, params)
        if isinstance(message, Outcome):
            outcomes[action.id] = message
            continue
        try:
            ctx.channels.get(action.channel).send(message)
        except DeliveryFailure as exc:
            outcomes[action.id] = outcome_of_failure(exc)
        else:
            outcomes[action.id] = Outcome.sent()
    return outcomes


def in_order(actions: Sequence[PlannedAction], *parts: dict[int, Outcome]) -> list[Outcome]:
    merged: dict[int, Outcome] = {}
    for part in parts:
        merged.update(part)
    return [merged[a.id] for a in actions]


def base_event(ctx: DeliveryContext, action: PlannedAction, event_type: str) -> dict[str, Any]:
    """The Standard Webhooks envelope {type, timestamp, data} shared by SMS and webhooks."""
    return {
        "type": event_type,
        "timestamp": ctx.now.isoformat(),
        "data": {
            "idempotency_key": action.idempotency_key,
            "rule_id": action.rule_id,
            "user_id": action.user_id,
            "variant": action.variant,
        },
    }
