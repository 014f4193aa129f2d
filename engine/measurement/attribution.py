"""Which purchases each rule's actions (and each holdout) earned: attribution in SQL.

An **exposure** is a `planned` (treated) or `held_out` (control) decision, exposed at
its `decided_at`: intention to treat. Both groups are measured from the same instant,
whether or not a message went out; delivery is reported beside it (engine/measurement/
report.py). Measuring the treated from the send would drop from the treated group only
the users a send window delayed or an `unless` re-check stopped (often those who had
just bought), and report a loss for a rule that does nothing. `suppressed` and `shadow`
decisions are never exposures.

A **conversion** of a rule is a purchase of the user with
`exposure_at < purchased_at <= exposure_at + window` (the rule's `attribution: {window:
...}`, default 7d) for one of the rule's exposures:

1. **Each rule on its own.** A purchase inside the windows of two rules counts for both:
   a follow-up (`after:`) reaches treated users only, so letting it take the purchase
   would shrink the followed rule's treated conversions and not its control's.
2. **Within one rule, once.** For the decision whose coupon the purchase redeemed, else
   for the latest decision whose window holds it. A coupon never stretches the window,
   or the treated group would be observed longer than the control group.

Nothing after the report's `until` counts.

**Refunds subtract.** A conversion's revenue is its purchase `amount` (shop currency)
minus the refund events of the same user and `order_id` from the purchase up to one
window after it (and at or before `until`), never below zero. A refunded purchase is
still a conversion.

Everything is set-based: one SELECT for all rules, evaluated by the database with a
window function per (purchase, rule); no Python loop over users or purchases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection

from engine.clock import ensure_aware
from engine.rules.models import DEFAULT_ATTRIBUTION_WINDOW
from engine.store.delivery import Coupon, CouponRedemption
from engine.store.people import Event
from engine.store.planning import Decision, OutboxAction
from engine.store.sql import add_seconds
from engine.store.types import UTCDateTime

decisions = Decision.__table__
outbox = OutboxAction.__table__
events = Event.__table__
coupons = Coupon.__table__
redemptions = CouponRedemption.__table__

EXPOSED_OUTCOMES = ("planned", "held_out")
VIA_COUPON = "coupon"
VIA_WINDOW = "window"


def sql_instant(value: datetime) -> ColumnElement[datetime]:
    return sa.literal(ensure_aware(value), UTCDateTime())


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """The attribution window of each rule; rules not listed get `default`."""

    by_rule: Mapping[str, timedelta]
    default: timedelta = DEFAULT_ATTRIBUTION_WINDOW

    def of(self, rule_id: str) -> timedelta:
        return self.by_rule.get(rule_id, self.default)

    @property
    def longest(self) -> timedelta:
        return max([self.default, *self.by_rule.values()])

    def seconds_sql(self, rule_id: ColumnElement[str]) -> ColumnElement[int]:
        """The window of the row's rule, in whole seconds, as SQL."""
        default = sa.literal(int(self.default.total_seconds()), sa.Integer)
        if not self.by_rule:
            return default
        whens = {rule: int(window.total_seconds()) for rule, window in sorted(self.by_rule.items())}
        return sa.case(whens, value=rule_id, else_=default)


def rule_windows(rules: Iterable[object]) -> Windows:
    """Windows from loaded rules (engine.rules.models.Rule): `attribution.window` or 7d."""
    by_rule = {}
    for rule in rules:
        attribution = getattr(rule, "attribution", None)
        by_rule[rule.id] = attribution.window if attribution else DEFAULT_ATTRIBUTION_WINDOW
    return Windows(by_rule=by_rule)


# ---------------------------------------------------------------- the queries


def first_sent(until: datetime, name: str = "first_sent"):
    """Per decision, when its first action was delivered (at or before `until`).

    A coupon voided because its email or SMS never reached the shopper
    (engine/coupons/void.py) was issued but never seen: it is no delivery.
    """
    void = sa.select(coupons.c.id).where(
        coupons.c.idempotency_key == outbox.c.idempotency_key, coupons.c.voided_at.is_not(None)
    )
    return (
        sa.select(
            outbox.c.decision_id.label("decision_id"),
            sa.func.min(outbox.c.sent_at).label("sent_at"),
        )
        .where(
            outbox.c.state == "sent",
            outbox.c.sent_at <= sql_instant(until),
            ~sa.exists(void),
        )
        .group_by(outbox.c.decision_id)
        .subquery(name)
    )


def exposures(*, until: datetime, not_before: datetime, windows: Windows):
    """One row per treated or held-out decision, exposed at its decision time.

    Intention to treat: both groups are measured from the decision, and every planned
    decision counts whether or not its message went out. Measuring the treated from
    the send instead would drop exactly the users a send window delayed or an
    `unless` re-check stopped (those who bought meanwhile) from the treated group only,
    and report a loss for a rule that does nothing. Delivery is reported beside it.
    """
    exposed_at = decisions.c.decided_at
    return (
        sa.select(
            decisions.c.id.label("decision_id"),
            decisions.c.rule_id,
            decisions.c.user_id,
            decisions.c.variant,
            decisions.c.outcome,
            decisions.c.decided_at,
            sa.type_coerce(exposed_at, UTCDateTime()).label("exposure_at"),
            windows.seconds_sql(decisions.c.rule_id).label("window_seconds"),
        )
        .where(
            decisions.c.outcome.in_(("planned", "held_out")),
            exposed_at <= sql_instant(until),
            exposed_at >= sql_instant(not_before),
        )
        .subquery("exposures")
    )


def conversions_query(
    *,
    since: datetime,
    until: datetime,
    windows: Windows,
    rule_ids: Iterable[str] | None = None,
    period_only: bool = True,
):
    """The purchases credited to the decisions made in [since, until).

    Columns: event_id, user_id, order_id, purchased_at, amount, refunded,
    decision_id, rule_id, variant, outcome, decided_at, exposure_at, window_seconds,
    via (`coupon` or `window`) and revenue (amount - refunded, at least 0). A purchase
    appears once per rule whose window holds it. With `period_only=False` the decisions
    made up to one window before `since`, which compete for the period's purchases
    within their rule, are kept too.
    """
    since, until = ensure_aware(since), ensure_aware(until)
    # A purchase after `since` can only compete with exposures one window before it.
    not_before = since - windows.longest
    exposed = exposures(until=until, not_before=not_before, windows=windows)
    purchase = events.alias("purchase")
    in_range = (
        purchase.c.type == "purchase",
        purchase.c.occurred_at > sql_instant(not_before),
        purchase.c.occurred_at <= sql_instant(until),
    )

    # Each rule is measured on its own: a purchase in the windows of two rules counts for
    # both (a follow-up must not take its conversions from the rule it follows, which
    # would happen to the treated group only). Within one rule a purchase counts once:
    # for the decision whose coupon it redeemed, else for the latest decision whose
    # window holds it. A coupon never stretches the window, or the treated group would
    # be observed longer than the control group.
    redemption = redemptions.alias("redemption")
    action = outbox.alias("coupon_action")
    coupon_match = sa.exists().where(
        redemption.c.event_id == purchase.c.id,
        redemption.c.outcome == "redeemed",
        coupons.c.id == redemption.c.coupon_id,
        action.c.idempotency_key == coupons.c.idempotency_key,
        action.c.decision_id == exposed.c.decision_id,
    )
    via = sa.case((coupon_match, sa.literal(VIA_COUPON)), else_=sa.literal(VIA_WINDOW))
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(purchase.c.id, exposed.c.rule_id),
            order_by=(
                sa.case((coupon_match, 0), else_=1),
                exposed.c.exposure_at.desc(),
                exposed.c.decision_id.desc(),
            ),
        )
        .label("touch")
    )
    candidates = (
        sa.select(
            purchase.c.id.label("event_id"),
            exposed.c.decision_id,
            exposed.c.rule_id,
            exposed.c.variant,
            exposed.c.outcome,
            exposed.c.decided_at,
            exposed.c.exposure_at,
            exposed.c.window_seconds,
            via.label("via"),
            rank,
        )
        .select_from(
            purchase.join(
                exposed,
                sa.and_(
                    exposed.c.user_id == purchase.c.user_id,
                    purchase.c.occurred_at > exposed.c.exposure_at,
                    purchase.c.occurred_at
                    <= add_seconds(exposed.c.exposure_at, exposed.c.window_seconds),
                ),
            )
        )
        .where(*in_range)
        .subquery("candidates")
    )
    credited = (
        sa.select(*(column for column in candidates.c if column.name != "touch"))
        .where(candidates.c.touch == 1)
        .subquery("credited")
    )

    # Refunds of the same order, from the purchase up to one window after it.
    bought = events.alias("bought")
    refund = events.alias("refund")
    refunded = (
        sa.select(sa.func.coalesce(sa.func.sum(refund.c.amount), 0))
        .where(
            refund.c.type == "refund",
            refund.c.user_id == bought.c.user_id,
            refund.c.order_id == bought.c.order_id,
            refund.c.occurred_at >= bought.c.occurred_at,
            refund.c.occurred_at <= add_seconds(bought.c.occurred_at, credited.c.window_seconds),
            refund.c.occurred_at <= sql_instant(until),
        )
        .scalar_subquery()
    )
    inner = sa.select(
        credited.c.event_id,
        bought.c.user_id,
        bought.c.order_id,
        bought.c.occurred_at.label("purchased_at"),
        sa.func.coalesce(bought.c.amount, 0).label("amount"),
        refunded.label("refunded"),
        credited.c.decision_id,
        credited.c.rule_id,
        credited.c.variant,
        credited.c.outcome,
        sa.type_coerce(credited.c.decided_at, UTCDateTime()).label("decided_at"),
        sa.type_coerce(credited.c.exposure_at, UTCDateTime()).label("exposure_at"),
        credited.c.window_seconds,
        credited.c.via,
    ).select_from(credited.join(bought, bought.c.id == credited.c.event_id))
    if period_only:
        inner = inner.where(
            credited.c.decided_at >= sql_instant(since), credited.c.decided_at < sql_instant(until)
        )
    if rule_ids is not None:
        inner = inner.where(credited.c.rule_id.in_(sorted(set(rule_ids))))
    row = inner.subquery("conversion")
    revenue = sa.case((row.c.amount > row.c.refunded, row.c.amount - row.c.refunded), else_=0)
    # Never below zero: a refund larger than what was paid is the shop's data error.
    return sa.select(*row.c, revenue.label("revenue"))


@dataclass(frozen=True)
class Conversion:
    """One purchase credited to one decision."""

    event_id: int
    user_id: str
    order_id: str | None
    purchased_at: datetime
    amount: Decimal
    refunded: Decimal
    revenue: Decimal
    decision_id: int
    rule_id: str
    variant: str | None
    outcome: str  # planned | held_out
    decided_at: datetime
    exposure_at: datetime | None
    via: str  # coupon | window


def attribute(
    connection: Connection,
    *,
    since: datetime,
    until: datetime,
    windows: Windows,
    rule_ids: Iterable[str] | None = None,
) -> list[Conversion]:
    """Every conversion of the decisions made in [since, until), in purchase order."""
    query = conversions_query(since=since, until=until, windows=windows, rule_ids=rule_ids)
    found = query.subquery("found")
    rows = connection.execute(
        sa.select(found).order_by(found.c.purchased_at, found.c.event_id)
    ).mappings()
    return [
        Conversion(
            event_id=row["event_id"],
            user_id=row["user_id"],
            order_id=row["order_id"],
            purchased_at=row["purchased_at"],
            amount=_money(row["amount"]),
            refunded=_money(row["refunded"]),
            revenue=_money(row["revenue"]),
            decision_id=row["decision_id"],
            rule_id=row["rule_id"],
            variant=row["variant"],
            outcome=row["outcome"],
            decided_at=row["decided_at"],
            exposure_at=row["exposure_at"],
            via=row["via"],
        )
        for row in rows
    ]


def _money(value) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))
