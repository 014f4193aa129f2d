"""The report's three grouped queries: decisions with their conversions, actions by
state and channel, and coupon redemptions, per rule and variant, for a period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.errors import NotFoundError
from engine.measurement.attribution import (
    Windows,
    conversions_query,
    first_sent,
    sql_instant,
)
from engine.rules.fields import did_you_mean
from engine.store.delivery import Coupon, CouponRedemption
from engine.store.people import Event
from engine.store.planning import Decision, OutboxAction

decisions = Decision.__table__
outbox = OutboxAction.__table__
coupons = Coupon.__table__
redemptions = CouponRedemption.__table__
events = Event.__table__


# ---------------------------------------------------------------- queries


def _period(since: datetime, until: datetime, rule_ids: list[str] | None) -> list:
    conditions = [
        decisions.c.decided_at >= sql_instant(since),
        decisions.c.decided_at < sql_instant(until),
    ]
    if rule_ids:
        conditions.append(decisions.c.rule_id.in_(rule_ids))
    return conditions


def decision_rows(
    connection: Connection,
    since: datetime,
    until: datetime,
    windows: Windows,
    rule_ids: list[str] | None,
) -> list[dict[str, Any]]:
    """Decisions per rule, outcome, reason and variant, with their conversions."""
    credited = conversions_query(
        since=since, until=until, windows=windows, rule_ids=rule_ids
    ).subquery("credited")
    per_decision = (
        sa.select(
            credited.c.decision_id,
            sa.func.count().label("orders"),
            sa.func.sum(credited.c.revenue).label("revenue"),
        )
        .group_by(credited.c.decision_id)
        .subquery("per_decision")
    )
    # Intention to treat, per user: every planned or held-out decision counts (what
    # reached the user is reported beside it, from the outbox), and the unit is the
    # user, as the holdout assigns users: repeated decisions of one user are one
    # recipient, so their correlation does not make the intervals too narrow.
    counted = decisions.c.outcome.in_(("planned", "held_out"))
    sent = first_sent(until)
    revenue = sa.func.coalesce(per_decision.c.revenue, 0)
    per_user = (
        sa.select(
            decisions.c.rule_id,
            decisions.c.outcome,
            decisions.c.reason,
            decisions.c.variant,
            decisions.c.user_id,
            sa.func.count().label("decisions"),
            sa.func.max(sa.case((counted, 1), else_=0)).label("recipient"),
            sa.func.max(
                sa.case(
                    (sa.and_(decisions.c.outcome == "planned", sent.c.sent_at.is_not(None)), 1),
                    else_=0,
                )
            ).label("delivered"),
            sa.func.sum(sa.func.coalesce(per_decision.c.orders, 0)).label("orders"),
            sa.func.sum(revenue).label("revenue"),
        )
        .select_from(
            decisions.outerjoin(
                per_decision, per_decision.c.decision_id == decisions.c.id
            ).outerjoin(sent, sent.c.decision_id == decisions.c.id)
        )
        .where(*_period(since, until, rule_ids))
        .group_by(
            decisions.c.rule_id,
            decisions.c.outcome,
            decisions.c.reason,
            decisions.c.variant,
            decisions.c.user_id,
        )
        .subquery("per_user")
    )
    u = per_user.c
    user_revenue = sa.cast(u.revenue, sa.Float)
    query = sa.select(
        u.rule_id,
        u.outcome,
        u.reason,
        u.variant,
        # Counts as integers: PostgreSQL sums a bigint column to numeric.
        _int_sum(u.decisions).label("decisions"),
        _int_sum(u.recipient).label("recipients"),
        _int_sum(u.delivered).label("delivered"),
        _int_sum(sa.case((sa.and_(u.recipient == 1, u.orders > 0), 1), else_=0)).label(
            "conversions"
        ),
        _int_sum(u.orders).label("orders"),
        sa.func.sum(u.revenue).label("revenue"),
        sa.func.sum(user_revenue * user_revenue).label("revenue_sq"),
    ).group_by(u.rule_id, u.outcome, u.reason, u.variant)
    return [dict(row) for row in connection.execute(query).mappings()]


def _int_sum(column) -> sa.ColumnElement[int]:
    return sa.cast(sa.func.coalesce(sa.func.sum(column), 0), sa.BigInteger)


def action_rows(
    connection: Connection, since: datetime, until: datetime, rule_ids: list[str] | None
) -> list[dict[str, Any]]:
    """Outbox actions of the period's decisions per state, reason and channel."""
    in_time = sa.and_(outbox.c.state == "sent", outbox.c.sent_at <= sql_instant(until))
    query = (
        sa.select(
            decisions.c.rule_id,
            decisions.c.variant,
            outbox.c.state,
            outbox.c.reason,
            outbox.c.channel,
            sa.func.count().label("actions"),
            sa.func.sum(sa.case((in_time, 1), else_=0)).label("sent_in_time"),
        )
        .select_from(outbox.join(decisions, decisions.c.id == outbox.c.decision_id))
        .where(*_period(since, until, rule_ids))
        .group_by(
            decisions.c.rule_id,
            decisions.c.variant,
            outbox.c.state,
            outbox.c.reason,
            outbox.c.channel,
        )
    )
    return [dict(row) for row in connection.execute(query).mappings()]


def coupon_rows(
    connection: Connection,
    since: datetime,
    until: datetime,
    rule_ids: list[str] | None,
    shop_currency: str,
) -> list[dict[str, Any]]:
    """Redeemed coupons of the period's decisions and what they took off, per variant."""
    action = outbox.alias("coupon_action")
    purchase = events.alias("purchase")
    amount = sa.func.coalesce(purchase.c.amount, 0)
    cost = sa.case(
        (coupons.c.percent_off.is_not(None), amount * coupons.c.percent_off / 100),
        (coupons.c.currency == shop_currency, coupons.c.value),
        # An amount off in another currency: at the rate ingest converted this order at.
        (
            sa.and_(
                purchase.c.original_currency == coupons.c.currency,
                purchase.c.original_amount > 0,
            ),
            coupons.c.value * purchase.c.amount / purchase.c.original_amount,
        ),
        else_=coupons.c.value,
    )
    query = (
        sa.select(
            decisions.c.rule_id,
            decisions.c.variant,
            sa.func.count().label("redeemed"),
            sa.func.sum(cost).label("cost"),
        )
        .select_from(
            redemptions.join(coupons, coupons.c.id == redemptions.c.coupon_id)
            .join(action, action.c.idempotency_key == coupons.c.idempotency_key)
            .join(decisions, decisions.c.id == action.c.decision_id)
            .join(purchase, purchase.c.id == redemptions.c.event_id)
        )
        .where(
            *_period(since, until, rule_ids),
            redemptions.c.outcome == "redeemed",
            purchase.c.occurred_at <= sql_instant(until),
        )
        .group_by(decisions.c.rule_id, decisions.c.variant)
    )
    return [dict(row) for row in connection.execute(query).mappings()]


def require_rules(connection: Connection, rule_ids: list[str], loaded) -> None:
    decided = set(
        connection.execute(
            sa.select(decisions.c.rule_id).where(decisions.c.rule_id.in_(rule_ids)).distinct()
        ).scalars()
    )
    known = set(loaded.rules) | set(loaded.broken)
    for rule_id in rule_ids:
        if rule_id not in known and rule_id not in decided:
            raise NotFoundError(f"no rule {rule_id!r}{did_you_mean(rule_id, sorted(known))}")
