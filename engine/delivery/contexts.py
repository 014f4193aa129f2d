"""The coupon a message shows.

The coupon shown in an email is the one of the coupon action of the same decision;
it is issued here if the coupon action has not been delivered yet, so the email and
the coupon can be delivered in any order and still agree on the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import sqlalchemy as sa

from engine.coupons.issue import issue_coupons
from engine.delivery.context import DeliveryContext, PlannedAction, params_of
from engine.delivery.policy import user_zone
from engine.store.planning import OutboxAction

outbox = OutboxAction.__table__


def coupons_for(ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> dict[int, dict]:
    """The coupon (issued now if needed) of each action's decision, by decision id."""
    decision_ids = sorted({a.decision_id for a in actions})
    if not decision_ids:
        return {}
    query = sa.select(
        outbox.c.decision_id,
        outbox.c.idempotency_key,
        outbox.c.user_id,
        outbox.c.rule_id,
        outbox.c.payload,
    ).where(
        outbox.c.decision_id.in_(decision_ids),
        outbox.c.kind == "coupon",
        # A skipped or dead coupon action must not be issued behind its back.
        outbox.c.state.in_(("planned", "claimed", "sent")),
    )
    with ctx.store.begin() as connection:
        rows = connection.execute(query).all()
        actions_like = [
            SimpleNamespace(
                idempotency_key=r.idempotency_key,
                user_id=r.user_id,
                rule_id=r.rule_id,
                params=params_of(r.payload),
            )
            for r in rows
        ]
        issued = issue_coupons(
            connection,
            actions_like,
            now=ctx.now,
            default_currency=ctx.settings.shop.currency,
            zone_of=lambda user_id: user_zone(ctx, user_id),
        )
    return {r.decision_id: issued[r.idempotency_key] for r in rows}
