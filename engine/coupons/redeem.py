"""Redeeming coupons from purchase events that carry a `coupon_code`.

Set-based: one INSERT ... SELECT classifies every not-yet-processed purchase with a
code, one UPDATE marks the redeemed coupons. A code is redeemed once, by its owner,
at or before its expiry; anything else is recorded with why (unknown, foreign,
expired, already_used), so the shop can see abuse and typos. Each purchase event is
processed once (unique event_id), so running this after every ingest is safe.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement

from engine.store import Store
from engine.store.delivery import Coupon, CouponRedemption
from engine.store.people import Event

coupons = Coupon.__table__
redemptions = CouponRedemption.__table__
events = Event.__table__


def normalised_code_sql(column: ColumnElement[str]) -> ColumnElement[str]:
    """engine.coupons.codes.normalise_code in SQL (same on SQLite and PostgreSQL)."""
    value = sa.func.upper(column)
    for old, new in (("-", ""), (" ", ""), ("O", "0"), ("I", "1"), ("L", "1")):
        value = sa.func.replace(value, old, new)
    return value


@dataclass
class RedemptionReport:
    counts: Counter[str] = field(default_factory=Counter)
    refused: list[dict[str, Any]] = field(default_factory=list)


def redeem_coupons(store: Store, *, now: datetime) -> RedemptionReport:
    """Process every purchase with a coupon code not processed yet."""
    valid = sa.and_(
        coupons.c.user_id == events.c.user_id, events.c.occurred_at <= coupons.c.expires_at
    )
    # The first valid use of a coupon (by time, then event id) wins; later ones are
    # already_used even when they arrive in the same import.
    rank = sa.func.row_number().over(
        partition_by=(coupons.c.id, sa.case((valid, 1), else_=0)),
        order_by=(events.c.occurred_at, events.c.id),
    )
    candidates = (
        sa.select(
            events.c.id.label("event_id"),
            events.c.user_id,
            events.c.coupon_code,
            events.c.order_id,
            events.c.occurred_at,
            coupons.c.id.label("coupon_id"),
            coupons.c.user_id.label("owner"),
            coupons.c.expires_at,
            coupons.c.redeemed_at,
            rank.label("use_rank"),
        )
        .select_from(
            events.outerjoin(
                coupons, coupons.c.code_key == normalised_code_sql(events.c.coupon_code)
            )
        )
        .where(
            events.c.type == "purchase",
            events.c.coupon_code.is_not(None),
            events.c.coupon_code != "",
            ~sa.exists().where(redemptions.c.event_id == events.c.id),
        )
        .subquery()
    )
    c = candidates.c
    outcome = sa.case(
        (c.coupon_id.is_(None), "unknown"),
        (c.owner != c.user_id, "foreign"),
        (c.occurred_at > c.expires_at, "expired"),
        (sa.or_(c.redeemed_at.is_not(None), c.use_rank > 1), "already_used"),
        else_="redeemed",
    )
    source = sa.select(
        c.event_id,
        c.user_id,
        sa.func.substr(c.coupon_code, 1, 64),
        c.coupon_id,
        c.order_id,
        outcome,
        c.occurred_at,
        sa.literal(now, redemptions.c.processed_at.type),
    )
    columns = [
        "event_id",
        "user_id",
        "code_entered",
        "coupon_id",
        "order_id",
        "outcome",
        "occurred_at",
        "processed_at",
    ]
    first_redemption = (
        sa.select(redemptions.c.occurred_at)
        .where(redemptions.c.coupon_id == coupons.c.id, redemptions.c.outcome == "redeemed")
        .scalar_subquery()
    )
    order_of_redemption = (
        sa.select(redemptions.c.order_id)
        .where(redemptions.c.coupon_id == coupons.c.id, redemptions.c.outcome == "redeemed")
        .scalar_subquery()
    )
    with store.begin() as connection:
        connection.execute(sa.insert(redemptions).from_select(columns, source))
        connection.execute(
            sa.update(coupons)
            .where(coupons.c.redeemed_at.is_(None), first_redemption.is_not(None))
            .values(redeemed_at=first_redemption, redeemed_order_id=order_of_redemption)
        )
        rows = connection.execute(
            sa.select(redemptions).where(redemptions.c.processed_at == now)
        ).all()
    report = RedemptionReport()
    for row in rows:
        report.counts[row.outcome] += 1
        if row.outcome != "redeemed":
            report.refused.append(dict(row._mapping))
    return report
