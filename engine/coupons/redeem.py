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
from sqlalchemy import ColumnElement, Connection, FromClause
from sqlalchemy.dialects.postgresql import ARRAY

from engine.coupons.void import settle_coupons
from engine.store import Store
from engine.store.delivery import Coupon, CouponCode, CouponRedemption
from engine.store.distribute import users_distributed
from engine.store.people import Event

coupons = Coupon.__table__
redemptions = CouponRedemption.__table__
events = Event.__table__
codes = CouponCode.__table__

# What the classification reads of a purchase, and of the coupon its code names.
EVENT_FACTS = (
    "id",
    "user_id",
    "coupon_code",
    "order_id",
    "occurred_at",
    "original_currency",
    "currency",
    "original_amount",
    "amount",
)
COUPON_FACTS = (
    "id",
    "user_id",
    "code_key",
    "voided_at",
    "expires_at",
    "value",
    "min_order",
    "currency",
    "redeemed_at",
)


def normalised_code_sql(column: ColumnElement[str]) -> ColumnElement[str]:
    """engine.coupons.codes.normalise_code in SQL (same on SQLite and PostgreSQL)."""
    value = sa.func.upper(column)
    for old, new in (("-", ""), (" ", ""), ("O", "0"), ("I", "1"), ("L", "1")):
        value = sa.func.replace(value, old, new)
    return value


def purchase_currency(shop_currency: str, source: FromClause = events) -> ColumnElement[str]:
    """The currency the purchase was made in (what the shop sent)."""
    return sa.func.coalesce(
        source.c.original_currency,
        source.c.currency,
        sa.literal(shop_currency, events.c.currency.type),
    )


def purchase_amount(source: FromClause = events) -> ColumnElement[Decimal]:
    """The purchase's amount in its own currency (purchase_currency)."""
    return sa.func.coalesce(source.c.original_amount, source.c.amount)


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
        ~sa.exists().where(
            redemptions.c.event_id == events.c.id, redemptions.c.user_id == events.c.user_id
        ),
    ]


def _classified(
    shop_currency: str, ev: FromClause, cp: FromClause, joined: FromClause, *where
) -> sa.Select:
    """The redemption rows (in `columns` order) of the purchases `ev`, each outer-joined
    in `joined` with the coupon `cp` its code names."""
    currency = purchase_currency(shop_currency, ev)
    amount = purchase_amount(ev)
    # Why this purchase may not use this coupon, first reason first; NULL when it may.
    # A NULL amount never counts as below the minimum: the order value is unknown.
    refusal = sa.case(
        (cp.c.id.is_(None), "unknown"),
        (cp.c.voided_at.is_not(None), "void"),
        (cp.c.user_id != ev.c.user_id, "foreign"),
        (ev.c.occurred_at > cp.c.expires_at, "expired"),
        # Only an amount off or a minimum order is tied to a currency; a plain
        # percentage off applies to an order in any currency.
        (
            sa.and_(
                sa.or_(cp.c.value.is_not(None), cp.c.min_order.is_not(None)),
                currency != cp.c.currency,
            ),
            "wrong_currency",
        ),
        (amount < cp.c.min_order, "below_min_order"),
        else_=None,
    )
    # The first acceptable use of a coupon (by time, then event id) wins; later ones are
    # already_used even when they arrive in the same import. A refused use takes no turn.
    rank = sa.func.row_number().over(
        partition_by=(cp.c.id, sa.case((refusal.is_(None), 1), else_=0)),
        order_by=(ev.c.occurred_at, ev.c.id),
    )
    candidates = (
        sa.select(
            ev.c.id.label("event_id"),
            ev.c.user_id,
            ev.c.coupon_code,
            ev.c.order_id,
            ev.c.occurred_at,
            cp.c.id.label("coupon_id"),
            cp.c.redeemed_at,
            refusal.label("refusal"),
            rank.label("use_rank"),
        )
        .select_from(joined)
        .where(*where)
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
    return sa.select(
        c.event_id,
        c.user_id,
        sa.func.substr(c.coupon_code, 1, 64),
        c.coupon_id,
        c.order_id,
        outcome,
        c.occurred_at,
    )


def redeem_coupons(store: Store, *, now: datetime) -> RedemptionReport:
    """Process every purchase with a coupon code not processed yet."""
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
    # Only the owner redeems a coupon: the same user, which keeps this per shard.
    redeemed_by_owner = (
        redemptions.c.coupon_id == coupons.c.id,
        redemptions.c.user_id == coupons.c.user_id,
        redemptions.c.outcome == "redeemed",
    )
    first_redemption = (
        sa.select(redemptions.c.occurred_at).where(*redeemed_by_owner).scalar_subquery()
    )
    order_of_redemption = (
        sa.select(redemptions.c.order_id).where(*redeemed_by_owner).scalar_subquery()
    )
    entered = sa.select(normalised_code_sql(events.c.coupon_code)).where(*_pending())
    shop_currency = store.settings.shop.currency
    with store.begin() as connection:
        if users_distributed(connection):
            source = _classified_on_citus(connection, shop_currency, now)
        else:
            # Judge each code on its settled state: a dispatcher that died between
            # recording a failed message and voiding its coupon must not leave it live.
            settle_coupons(connection, now=now, scope=coupons.c.code_key.in_(entered))
            joined = events.outerjoin(
                coupons, coupons.c.code_key == normalised_code_sql(events.c.coupon_code)
            )
            source = _classified(shop_currency, events, coupons, joined, *_pending())
        # RETURNING: exactly this call's rows, even if another call used the same `now`.
        inserted = []
        if source is not None:
            inserted = connection.execute(
                sa.insert(redemptions)
                .from_select(
                    columns, source.add_columns(sa.literal(now, redemptions.c.processed_at.type))
                )
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


def _typed_values(name: str, columns: list[sa.Column], rows: list[tuple]) -> FromClause:
    """Literal rows as a FROM clause whose columns have the types of `columns` (a VALUES
    list alone types a column of NULLs as text)."""
    values = sa.values(*(sa.column(c.name, c.type) for c in columns), name=f"{name}_rows")
    values = values.data(rows)
    typed = (sa.cast(values.c[c.name], c.type).label(c.name) for c in columns)
    return sa.select(*typed).subquery(name)


def _classified_on_citus(connection: Connection, shop_currency: str, now: datetime):
    """`_classified` on a distributed store, or None when no purchase is pending.

    A code entered by one shopper may be another's (`foreign`): a join of events with
    coupons by code spans shards, which Citus refuses. So: the pending purchases (a
    per-user query), the owners of their codes from the `coupon_codes` reference
    table, those coupons settled and read by (owner, code), and the same
    classification over these rows as literal values.
    """
    code_key = normalised_code_sql(events.c.coupon_code).label("code_key")
    pending = connection.execute(
        sa.select(*(events.c[name] for name in EVENT_FACTS), code_key).where(*_pending())
    ).all()
    if not pending:
        return None
    keys = sorted({row.code_key for row in pending})
    owned = connection.execute(
        sa.select(codes.c.code_key, codes.c.user_id).where(
            codes.c.code_key == sa.any_(sa.bindparam(None, keys, type_=ARRAY(sa.Text)))
        )
    ).all()
    found: list = []
    if owned:
        owners = sorted({row.user_id for row in owned})
        scope = sa.and_(
            coupons.c.user_id == sa.any_(sa.bindparam(None, owners, type_=ARRAY(sa.Text))),
            coupons.c.code_key
            == sa.any_(sa.bindparam(None, [row.code_key for row in owned], type_=ARRAY(sa.Text))),
        )
        # Judge each code on its settled state (see redeem_coupons).
        settle_coupons(connection, now=now, scope=scope)
        found = connection.execute(
            sa.select(*(coupons.c[name] for name in COUPON_FACTS)).where(scope)
        ).all()
    event_columns = [events.c[name] for name in EVENT_FACTS] + [coupons.c.code_key]
    ev = _typed_values("pending_event", event_columns, [tuple(row) for row in pending])
    # A row matching nothing when no code names a coupon: VALUES needs one.
    cp = _typed_values(
        "named_coupon",
        [coupons.c[name] for name in COUPON_FACTS],
        [tuple(row) for row in found] or [(None,) * len(COUPON_FACTS)],
    )
    return _classified(shop_currency, ev, cp, ev.outerjoin(cp, cp.c.code_key == ev.c.code_key))


def _explain_refusals(connection, refused_ids: set[int], now: datetime, settings) -> list[dict]:
    """Write `detail` for the refused rows of this call; returns them, by event."""
    if not refused_ids:
        return []
    coupon_facts = (
        coupons.c.currency.label("coupon_currency"),
        coupons.c.min_order,
        coupons.c.expires_at,
        coupons.c.voided_at,
        coupons.c.void_reason,
        coupons.c.redeemed_at,
        coupons.c.redeemed_order_id,
    )
    of_purchase = redemptions.join(
        events,
        sa.and_(events.c.id == redemptions.c.event_id, events.c.user_id == redemptions.c.user_id),
    )
    # On Citus a refused code may be another shopper's coupon, on another shard: its
    # facts are read by id afterwards instead of joined.
    apart = users_distributed(connection)
    facts = (
        sa.select(
            redemptions,
            *(() if apart else coupon_facts),
            purchase_currency(settings.shop.currency).label("purchase_currency"),
            purchase_amount().label("purchase_amount"),
        )
        .select_from(
            of_purchase
            if apart
            else of_purchase.outerjoin(coupons, coupons.c.id == redemptions.c.coupon_id)
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
    rows = [row._mapping for row in connection.execute(facts) if row.id in refused_ids]
    if apart:
        named = sorted({row["coupon_id"] for row in rows if row["coupon_id"] is not None})
        by_id = {}
        if named:
            query = sa.select(coupons.c.id, *coupon_facts).where(
                coupons.c.id == sa.any_(sa.bindparam(None, named, type_=ARRAY(sa.BigInteger)))
            )
            by_id = {row.id: row._mapping for row in connection.execute(query)}
        blank = dict.fromkeys(column.name for column in coupon_facts)
        rows = [{**blank, **by_id.get(row["coupon_id"], {}), **row} for row in rows]
    refused = []
    for row in rows:
        detail = refusal_detail(row, settings.tz)
        refused.append({**{k: row[k] for k in redemptions.c.keys()}, "detail": detail})
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
