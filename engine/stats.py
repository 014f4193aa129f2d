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

`shop_report` adds what `nudge stats` shows besides: the KPIs of a period
[since, until) per stage, the first-purchase cohorts with LTV and retention, CTR,
and CAC / ROAS from ad spend (engine/measurement/kpis.py has their definitions).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.clock import ensure_aware
from engine.config import Settings
from engine.lifecycle import FUNNEL_ORDER, stage_case, users_table
from engine.store.profiles import profiles_as_of

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

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


def shop_report(
    connection: Connection, settings: Settings, *, since: datetime | None, until: datetime
) -> dict[str, Any]:
    """`shop_stats` as of `until` (every key it has, unchanged), plus the period's KPIs:

    `since`, `until`; `period`: totals and `stages` over [since, until) with the
    conversion window; `cohorts` (size, GMV, LTV, buyers and retention per month);
    `ctr` (email, ads); `spend` (cost per channel, new buyers, CAC, revenue, ROAS).
    """
    from engine.measurement.kpis import shop_kpis

    kpis = shop_kpis(connection, settings, since=since, until=until)
    result = shop_stats(connection, settings, until)
    period = {
        "empty": kpis["empty"],
        "conversion_window_days": kpis["conversion_window_days"],
        **kpis["totals"],
        "stages": kpis["stages"],
    }
    result.update(
        since=kpis["since"],
        until=kpis["until"],
        period=period,
        cohorts=kpis["cohorts"],
        ctr=kpis["ctr"],
        spend=kpis["spend"],
    )
    return result


def render_report(result: dict[str, Any], zone: ZoneInfo) -> str:
    """The sections `nudge stats` prints after the KPIs as of T: the period (when it has
    a start), cohorts with their retention table, CTR, and ad spend when there is any."""
    currency = result["currency"]
    period = result["period"]
    lines: list[str] = []
    if result["since"] is not None:
        lines += ["", f"Period {_local(result['since'], zone)} to {_local(result['until'], zone)}"]
        if period["empty"]:
            lines.append(
                "Nothing happened in this period: no purchases, refunds, new users, "
                "emails sent, clicks or ad spend."
            )
        days = period["conversion_window_days"]
        lines += _table(
            ["KPI", "value"],
            [
                ["buyers", period["buyers"]],
                ["orders", period["orders"]],
                ["GMV (purchases - refunds)", format_money(period["gmv"], currency)],
                ["refunds", format_money(period["refunds"], currency)],
                ["AOV", format_money(period["aov"], currency)],
                ["repeat-purchase rate", format_rate(period["repeat_purchase_rate"])],
                ["new users (first seen)", period["new_users"]],
                [
                    f"first-purchase conversion ({days} days)",
                    format_rate(period["first_purchase_conversion"]),
                ],
                ["new buyers (first purchase)", period["new_buyers"]],
            ],
        )
        lines.append("")
        lines += _table(
            ["stage at until", "buyers", "orders", "GMV", "AOV", "repeat", "new", "converted"],
            [
                [
                    row["stage"],
                    row["buyers"],
                    row["orders"],
                    format_money(row["gmv"], currency),
                    format_money(row["aov"], currency),
                    format_rate(row["repeat_purchase_rate"]),
                    row["new_users"],
                    format_rate(row["first_purchase_conversion"]),
                ]
                for row in period["stages"]
            ],
        )
    lines += ["", "Cohorts by first-purchase month (LTV: GMV per buyer to date)"]
    cohorts = result["cohorts"]
    if not cohorts:
        lines.append("No first purchases in this period.")
    else:
        width = max(len(row["retention"]) for row in cohorts)
        lines += _table(
            ["cohort", "size", "GMV", "LTV", *(f"M{k}" for k in range(width))],
            [
                [
                    row["cohort"],
                    row["size"],
                    format_money(row["gmv"], currency),
                    format_money(row["ltv"], currency),
                    *(format_rate(value) for value in row["retention"]),
                ]
                for row in cohorts
            ],
        )
    email, ads = result["ctr"]["email"], result["ctr"]["ads"]
    lines += ["", "Click-through"]
    lines += _table(
        ["channel", "delivered", "clicks", "CTR"],
        [
            ["email (sent)", email["sent"], email["clicks"], format_rate(email["ctr"])],
            ["ads (impressions)", ads["impressions"], ads["clicks"], format_rate(ads["ctr"])],
        ],
    )
    spend = result["spend"]
    if spend["rows"]:
        first = spend["first_day"]
        lines += ["", f"Ad spend {'' if first is None else f'{first} '}to {spend['last_day']}"]
        lines += _table(
            ["channel", "spend"],
            [[row["channel"], format_money(row["cost"], currency)] for row in spend["channels"]]
            + [["total", format_money(spend["cost"], currency)]],
        )
        roas = spend["roas"]
        lines += [
            f"new buyers {spend['new_buyers']}, "
            f"CAC {format_money(spend['cac'], currency)}, "
            f"ROAS {'-' if roas is None else f'{roas:.2f}'} "
            f"(GMV {format_money(spend['revenue'], currency)} / spend)"
        ]
    return "\n".join(lines)


def _local(value: datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).isoformat(sep=" ", timespec="seconds")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A plain aligned table, as the CLI prints them (wide characters count twice)."""
    cells = [list(headers)] + [["" if c is None else str(c) for c in row] for row in rows]
    count = max(len(row) for row in cells)
    cells = [row + [""] * (count - len(row)) for row in cells]
    widths = [max(_width(row[i]) for row in cells) for i in range(count)]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


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
