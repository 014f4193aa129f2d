"""Redeeming coupons from purchase events that carry a `coupon_code`.

Set-based: one INSERT ... SELECT classifies every not-yet-processed purchase with a
code, one UPDATE marks the redeemed coupons. A code is redeemed once, by its owner,
at or before its expiry, on an order in the coupon's currency of at least its minimum
order, unless it was voided; anything else is recorded with why (unknown, void,
foreign, expired, wrong_currency, below_min_order, already_used) and a sentence a
support agent can repeat (`detail`), so the shop can see abuse and typos. Each
purchase event is processed once (unique event_id), so running this after every
ingest is safe.

Amounts: `events.amount`/`currency` are in the shop currency; when the shop sent
another currency, `original_amount`/`original_currency` hold what it sent. A coupon
is compared with the purchase in the purchase's own currency, never with a converted
amount: a 150 CNY minimum is not met by an order of 25 USD, whatever the rate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import ColumnElement

from engine.coupons.void import settle_coupons
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


def purchase_currency(shop_currency: str) -> ColumnElement[str]:
    """The currency the purchase was made in (what the shop sent)."""
    return sa.func.coalesce(
        events.c.original_currency,
        events.c.currency,
        sa.literal(shop_currency, events.c.currency.type),
    )


def purchase_amount() -> ColumnElement[Decimal]:
    """The purchase's amount in its own currency (purchase_currency)."""
    return sa.func.coalesce(events.c.original_amount, events.c.amount)


@dataclass
class RedemptionReport:
    counts: Counter[str] = field(default_factory=Counter)
    refused: list[dict[str, Any]] = field(default_factory=list)


def _pending() -> list[ColumnElement[bool]]:
    """Purchases with a code that have not been processed yet."""
    return [
        events.c.type == "purchase",
        events.c.coupon_code.is_not(None),
        events.c.coupon_code != "",
        ~sa.exists().where(redemptions.c.event_id == events.c.id),
    ]


def redeem_coupons(store: Store, *, now: datetime) -> RedemptionReport:
    """Process every purchase with a coupon code not processed yet."""
    currency = purchase_currency(store.settings.shop.currency)
    amount = purchase_amount()
    # Why this purchase may not use this coupon, first reason first; NULL when it may.
    # A NULL amount never counts as below the minimum: the order value is unknown.
    refusal = sa.case(
        (coupons.c.id.is_(None), "unknown"),
        (coupons.c.voided_at.is_not(None), "void"),
        (coupons.c.user_id != events.c.user_id, "foreign"),
        (events.c.occurred_at > coupons.c.expires_at, "expired"),
        # Only an amount off or a minimum order is tied to a currency; a plain
        # percentage off applies to an order in any currency.
        (
            sa.and_(
                sa.or_(coupons.c.value.is_not(None), coupons.c.min_order.is_not(None)),
                currency != coupons.c.currency,
            ),
            "wrong_currency",
        ),
        (amount < coupons.c.min_order, "below_min_order"),
        else_=None,
    )
    # The first acceptable use of a coupon (by time, then event id) wins; later ones are
    # already_used even when they arrive in the same import. A refused use takes no turn.
    rank = sa.func.row_number().over(
        partition_by=(coupons.c.id, sa.case((refusal.is_(None), 1), else_=0)),
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
            coupons.c.redeemed_at,
            refusal.label("refusal"),
            rank.label("use_rank"),
        )
        .select_from(
            events.outerjoin(
                coupons, coupons.c.code_key == normalised_code_sql(events.c.coupon_code)
            )
        )
        .where(*_pending())
        .subquery()
    )
    c = candidates.c
    outcome = sa.func.coalesce(
        c.refusal,
        sa.case(
            (sa.or_(c.redeemed_at.is_not(None), c.use_rank > 1), "already_used"),
            else_="redeemed",
        ),
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
    entered = sa.select(normalised_code_sql(events.c.coupon_code)).where(*_pending())
    with store.begin() as connection:
        # Judge each code on its settled state: a dispatcher that died between
        # recording a failed message and voiding its coupon must not leave it live.
        settle_coupons(connection, now=now, scope=coupons.c.code_key.in_(entered))
        # RETURNING: exactly this call's rows, even if another call used the same `now`.
        inserted = connection.execute(
            sa.insert(redemptions)
            .from_select(columns, source)
            .returning(redemptions.c.id, redemptions.c.outcome)
        ).all()
        connection.execute(
            sa.update(coupons)
            .where(coupons.c.redeemed_at.is_(None), first_redemption.is_not(None))
            .values(redeemed_at=first_redemption, redeemed_order_id=order_of_redemption)
        )
        refused_ids = {row.id for row in inserted if row.outcome != "redeemed"}
        rows = _explain_refusals(connection, refused_ids, now, store.settings)
    report = RedemptionReport()
    report.counts.update(row.outcome for row in inserted)
    report.refused = rows
    return report


def _explain_refusals(connection, refused_ids: set[int], now: datetime, settings) -> list[dict]:
    """Write `detail` for the refused rows of this call; returns them, by event."""
    if not refused_ids:
        return []
    facts = (
        sa.select(
            redemptions,
            coupons.c.currency.label("coupon_currency"),
            coupons.c.min_order,
            coupons.c.expires_at,
            coupons.c.voided_at,
            coupons.c.void_reason,
            coupons.c.redeemed_at,
            coupons.c.redeemed_order_id,
            purchase_currency(settings.shop.currency).label("purchase_currency"),
            purchase_amount().label("purchase_amount"),
        )
        .select_from(
            redemptions.join(events, events.c.id == redemptions.c.event_id).outerjoin(
                coupons, coupons.c.id == redemptions.c.coupon_id
            )
        )
        # This call's rows, found without a list of ids (an import of a shop's own
        # codes can refuse more rows than a statement takes parameters).
        .where(
            redemptions.c.processed_at == now,
            redemptions.c.outcome != "redeemed",
            redemptions.c.detail.is_(None),
        )
        .order_by(redemptions.c.event_id)
    )
    refused = []
    for row in connection.execute(facts):
        if row.id not in refused_ids:
            continue
        detail = refusal_detail(row._mapping, settings.tz)
        refused.append({**{k: row._mapping[k] for k in redemptions.c.keys()}, "detail": detail})
    if refused:
        connection.execute(
            sa.update(redemptions)
            .where(redemptions.c.id == sa.bindparam("b_id"))
            .values(detail=sa.bindparam("b_detail")),
            [{"b_id": r["id"], "b_detail": r["detail"]} for r in refused],
        )
    return refused


def _money(value: Decimal | None, currency: str | None) -> str:
    return f"{Decimal(value):.2f} {currency}"


def _when(instant: datetime, tz: ZoneInfo) -> str:
    # Shop-local time with its zone: what a support agent and the shopper read.
    # Microseconds only when there are some: an order placed a microsecond after the
    # expiry must not read as placed at the same time.
    local = instant.astimezone(tz)
    fraction = f".{local.microsecond:06d}" if local.microsecond else ""
    return f"{local:%Y-%m-%d %H:%M:%S}{fraction} {tz.key}"


def refusal_detail(row: dict[str, Any], tz: ZoneInfo) -> str:
    """Why the code of one refused purchase was refused, in one sentence."""
    outcome = row["outcome"]
    if outcome == "unknown":
        return f"no coupon has the code {row['code_entered']}"
    if outcome == "void":
        return (
            f"the code was cancelled at {_when(row['voided_at'], tz)} because the message "
            f"carrying it never reached the shopper ({row['void_reason']})"
        )
    if outcome == "foreign":
        return "the code was issued to another shopper's account"
    if outcome == "expired":
        return (
            f"the code expired at {_when(row['expires_at'], tz)}; "
            f"the order was placed at {_when(row['occurred_at'], tz)}"
        )
    if outcome == "wrong_currency":
        return (
            f"order {_money(row['purchase_amount'], row['purchase_currency'])} is not in "
            f"{row['coupon_currency']}, the only currency the coupon applies to"
            if row["purchase_amount"] is not None
            else f"the order is in {row['purchase_currency']}; the coupon only applies "
            f"to orders in {row['coupon_currency']}"
        )
    if outcome == "below_min_order":
        return (
            f"order {_money(row['purchase_amount'], row['purchase_currency'])} is below "
            f"the minimum order of {_money(row['min_order'], row['coupon_currency'])}"
        )
    if outcome == "already_used":
        order = row["redeemed_order_id"]
        when = row["redeemed_at"]
        used = f" for order {order}" if order else ""
        at = f" at {_when(when, tz)}" if when else ""
        return f"the code was already used{used}{at}"
    return outcome
