"""`coupon`: issue a unique, single-use code to the user.

```yaml
actions:
  coupon: {value: 20, currency: CNY, min_order: 100, expires_in: 14d}
  # or: coupon: {percent_off: 15, expires_in: 7d, prefix: WELCOME}
```
The code is reserved only when the action is really delivered (never by dry-run,
preview or tests); redemption is by the owner, once, at or before expiry, in the
coupon's currency and from its minimum order. A code whose email/SMS never reached the
shopper is void (engine/coupons/void.py).
"""

from __future__ import annotations

from engine.action_kinds import ActionKind
from engine.coupons.params import CouponParams


def deliver(ctx, actions):
    """Issue (or find, on a retry) each action's code in one transaction.

    When every email and SMS of the action's decision was already skipped or went
    dead, the shopper can never see the code: nothing is issued and the action is
    skipped with the reason its coupon would be voided for (`message_skipped:
    unsubscribed`, `message_dead:rejected`), rather than issuing a code that is void
    from birth. A message failing while this runs (another dispatcher) is caught by
    the dispatcher's settle step, which voids the coupon at once (engine/coupons/void.py).
    """
    from engine.actions.delivering import in_order, parse_params
    from engine.coupons.issue import issue_coupons
    from engine.coupons.void import undelivered_decisions
    from engine.delivery.context import Outcome
    from engine.delivery.policy import user_zone

    good, bad = parse_params(actions, CouponParams)
    with ctx.store.begin() as connection:
        failed = undelivered_decisions(connection, [action.decision_id for action, _ in good])
        issuing = [action for action, _ in good if action.decision_id not in failed]
        if issuing:
            issue_coupons(
                connection,
                issuing,
                now=ctx.now,
                default_currency=ctx.settings.shop.currency,
                zone_of=lambda user_id: user_zone(ctx, user_id),
            )
    outcomes = {
        action.id: Outcome.skipped(failed[action.decision_id])
        if action.decision_id in failed
        else Outcome.sent()
        for action, _ in good
    }
    return in_order(actions, bad, outcomes)


KIND = ActionKind(
    name="coupon",
    channel="coupon",
    params=CouponParams,
    description="Issue a unique single-use coupon code (amount or percent off).",
    example={"value": 20, "currency": "CNY", "min_order": 100, "expires_in": "14d"},
    deliver=deliver,
)
