"""Shop KPIs as of an instant T, per lifecycle stage and in total (DESIGN "KPIs").

Definitions, the same everywhere in Nudge, all "to date" (every event at or before T):
- orders: purchase events; buyers: users with at least one purchase;
- GMV: purchase amounts minus refund amounts; AOV: GMV / orders;
- repeat-purchase rate: buyers with two or more purchases / buyers;
- first-purchase conversion: buyers / users seen.
Money is in the shop currency: ingest converts amounts in other currencies
(engine/ingest/money.py), so the sums never add one currency to another.
One grouped query over users joined to their profiles as of T does the work; the
totals add up the few per-stage rows, so totals and stage rows always agree.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.clock import ensure_aware
from engine.config import Settings
from engine.lifecycle import FUNNEL_ORDER, stage_case, users_table
from engine.store.profiles import profiles_as_of

CENT = Decimal("0.01")


def shop_stats(connection: Connection, settings: Settings, as_of: datetime) -> dict[str, Any]:
    """Users per stage, buyers, orders, GMV, AOV, repeat rate and conversion at `as_of`.

    Money values are Decimals in the shop currency; rates are floats in [0, 1], None
    when their denominator is zero.
    """
    as_of = ensure_aware(as_of)
    profiles = profiles_as_of(connection, as_of)
    purchases = sa.func.coalesce(profiles.c.purchase_count, 0)
    per_user = (
        sa.select(
            stage_case(users_table, profiles, as_of=as_of, settings=settings.lifecycle).label(
                "stage"
            ),
            purchases.label("purchases"),
            sa.func.coalesce(profiles.c.total_spent, 0).label("spent"),
        )
        .select_from(users_table.outerjoin(profiles, profiles.c.user_id == users_table.c.id))
        .subquery("per_user")
    )
    grouped = (
        sa.select(
            per_user.c.stage,
            sa.func.count().label("users"),
            sa.func.coalesce(sa.func.sum(sa.case((per_user.c.purchases > 0, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((per_user.c.purchases > 1, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(per_user.c.purchases), 0),
            sa.func.coalesce(sa.func.sum(per_user.c.spent), 0),
        )
        .where(per_user.c.stage.is_not(None))
        .group_by(per_user.c.stage)
    )
    found = {
        stage: (int(users), int(buyers), int(repeaters), int(orders), _money(gmv))
        for stage, users, buyers, repeaters, orders, gmv in connection.execute(grouped)
    }
    stages = []
    for stage in FUNNEL_ORDER:
        users, buyers, repeaters, orders, gmv = found.get(stage, (0, 0, 0, 0, _money(0)))
        stages.append(
            {
                "stage": stage,
                "users": users,
                "buyers": buyers,
                "orders": orders,
                "gmv": gmv,
                "aov": _ratio_money(gmv, orders),
            }
        )
    users = sum(row["users"] for row in stages)
    buyers = sum(row["buyers"] for row in stages)
    repeaters = sum(values[2] for values in found.values())
    orders = sum(row["orders"] for row in stages)
    gmv = sum((row["gmv"] for row in stages), _money(0))
    for row in stages:
        row["share"] = _rate(row["users"], users)
    return {
        "as_of": as_of,
        "currency": settings.shop.currency,
        "users": users,
        "buyers": buyers,
        "orders": orders,
        "gmv": gmv,
        "aov": _ratio_money(gmv, orders),
        "repeat_purchase_rate": _rate(repeaters, buyers),
        "first_purchase_conversion": _rate(buyers, users),
        "stages": stages,
    }


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(CENT, rounding=ROUND_HALF_UP)


def _ratio_money(total: Decimal, count: int) -> Decimal | None:
    return (total / count).quantize(CENT, rounding=ROUND_HALF_UP) if count else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def format_money(value: Decimal | None, currency: str) -> str:
    """`12,345.60 CNY`: thousands separated, two decimals, the shop currency."""
    return "-" if value is None else f"{value:,.2f} {currency}"


def currency_note(currency: str) -> str:
    """Says what the money figures are in, and where other currencies went."""
    return (
        f"Money in {currency}, the shop currency: amounts in other currencies are "
        "converted at ingest ([currency] rates in nudge.toml)."
    )


def format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
