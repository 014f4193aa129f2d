"""Which purchases each rule's actions (and each holdout) earned: attribution in SQL.

An **exposure** is one decision that reached its user or stands for one who was
deliberately left out:

- a `planned` decision is exposed when its first action was delivered: the earliest
  `sent_at` of its outbox rows in state `sent` (a decision whose actions were all
  skipped, went dead or are still pending has no exposure; nor has one whose only
  sent action is a coupon voided because its message never reached the shopper);
- a `held_out` decision is exposed at `decided_at`: the instant the control group
  would have been treated. Treated and control are measured the same way, from the
  moment each was (or would have been) acted on.

`suppressed` and `shadow` decisions are never exposures.

A **conversion** is a purchase event credited to exactly one exposure:

1. **A redeemed coupon decides.** A purchase whose coupon code was redeemed
   (`coupon_redemptions.outcome = 'redeemed'`) belongs to the decision whose coupon
   action issued that code (coupons.idempotency_key -> outbox -> decision), whatever
   its time; the window does not apply and no other exposure competes for it.
2. **Otherwise the last touch wins.** The purchase is a candidate of every exposure of
   the same user with `exposure_at < purchased_at <= exposure_at + window` (the window
   of the exposure's rule, `attribution: {window: ...}`, default 7d); among them the
   latest exposure wins (ties: the latest decision id). Held-out exposures compete
   like treated ones, so a rule's control group loses purchases to the other rules
   exactly as its treated group does.

So a purchase counts at most once overall, hence at most once per rule. Nothing after
the report's `until` counts: exposures, purchases and refunds at or before it only.

**Refunds subtract.** A conversion's revenue is its purchase `amount` (shop currency)
minus the refund events of the same user and `order_id` from the purchase up to one
window after it (and at or before `until`), never below zero. A refunded purchase is
still a conversion.

Everything is set-based: one SELECT for all rules, evaluated by the database with a
window function for the last touch; no Python loop over users or purchases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from engine.clock import ensure_aware
from engine.rules.models import DEFAULT_ATTRIBUTION_WINDOW
from engine.store.delivery import Coupon, CouponRedemption
from engine.store.people import Event
from engine.store.planning import Decision, OutboxAction
from engine.store.types import UTCDateTime

decisions = Decision.__table__
outbox = OutboxAction.__table__
events = Event.__table__
coupons = Coupon.__table__
redemptions = CouponRedemption.__table__

EXPOSED_OUTCOMES = ("planned", "held_out")
VIA_COUPON = "coupon"
VIA_WINDOW = "window"


# ---------------------------------------------------------------- instant arithmetic


class add_seconds(FunctionElement):
    """`instant + seconds` (a per-row integer expression) as an instant, exact to the
    microsecond on both databases (engine/store/sql.py's plus_duration takes a constant
    and keeps milliseconds only; a window edge must be exact)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "add_seconds"


@compiles(add_seconds, "sqlite")
def _add_seconds_sqlite(element, compiler, **kw):
    instant, seconds = list(element.clauses)
    text = compiler.process(instant, **kw)
    # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): SQLite's date functions drop the
    # fraction, so it is carried over from the original text.
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', {text}, "
        f"'+' || CAST({compiler.process(seconds, **kw)} AS INTEGER) || ' seconds')"
        f" || substr({text}, 20))"
    )


@compiles(add_seconds, "postgresql")
def _add_seconds_postgresql(element, compiler, **kw):
    instant, seconds = list(element.clauses)
    return (
        f"({compiler.process(instant, **kw)} + "
        f"CAST({compiler.process(seconds, **kw)} AS INTEGER) * INTERVAL '1 second')"
    )


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
    """One row per exposed decision: when it was exposed and its rule's window."""
    sent = first_sent(until)
    exposed_at = sa.case(
        (decisions.c.outcome == "held_out", decisions.c.decided_at), else_=sent.c.sent_at
    )
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
        .select_from(decisions.outerjoin(sent, sent.c.decision_id == decisions.c.id))
        .where(
            sa.or_(
                decisions.c.outcome == "held_out",
                sa.and_(decisions.c.outcome == "planned", sent.c.sent_at.is_not(None)),
            ),
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
    via (`coupon` or `window`) and revenue (amount - refunded, at least 0). `rule_ids`
    narrows the result, never the competition: a purchase goes to the same exposure
    whichever rules are reported. With
    `period_only=False` the decisions exposed up to one window before `since`, which
    compete for the period's purchases, are kept too.
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

    # 1. Redeemed coupons tie a purchase to the decision that issued the code.
    redemption = redemptions.alias("redemption")
    action = outbox.alias("coupon_action")
    issued = decisions.alias("issuing_decision")
    sent = first_sent(until, "coupon_first_sent")
    by_coupon = (
        sa.select(
            purchase.c.id.label("event_id"),
            issued.c.id.label("decision_id"),
            issued.c.rule_id,
            issued.c.variant,
            issued.c.outcome,
            issued.c.decided_at,
            sent.c.sent_at.label("exposure_at"),
            windows.seconds_sql(issued.c.rule_id).label("window_seconds"),
            sa.literal(VIA_COUPON, sa.String).label("via"),
        )
        .select_from(
            purchase.join(redemption, redemption.c.event_id == purchase.c.id)
            .join(coupons, coupons.c.id == redemption.c.coupon_id)
            .join(action, action.c.idempotency_key == coupons.c.idempotency_key)
            .join(issued, issued.c.id == action.c.decision_id)
            .outerjoin(sent, sent.c.decision_id == issued.c.id)
        )
        .where(*in_range, redemption.c.outcome == "redeemed")
    )

    # 2. Otherwise the latest exposure whose window holds the purchase.
    redeemed = sa.select(redemptions.c.event_id).where(
        redemptions.c.event_id == purchase.c.id, redemptions.c.outcome == "redeemed"
    )
    rank = (
        sa.func.row_number()
        .over(
            partition_by=purchase.c.id,
            order_by=(exposed.c.exposure_at.desc(), exposed.c.decision_id.desc()),
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
            sa.literal(VIA_WINDOW, sa.String).label("via"),
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
        .where(*in_range, ~sa.exists(redeemed))
        .subquery("candidates")
    )
    last_touch = sa.select(*(column for column in candidates.c if column.name != "touch")).where(
        candidates.c.touch == 1
    )
    credited = sa.union_all(by_coupon, last_touch).subquery("credited")

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
