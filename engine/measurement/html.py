"""`nudge report --html FILE`: the report as one self-contained HTML page.

The page holds, for the period of the report:

- per rule: the funnel (audience -> planned -> delivered -> converted), the groups side
  by side (a table and a chart of conversion rate and revenue per recipient), the lift
  of each comparison as a dot with two error bars (fixed horizon and always valid,
  labelled), its verdict sentences, the incremental figures and the notes;
- the shop's KPIs of the same period (engine.stats.shop_report): totals, per stage,
  click-through and ad spend, the cohorts with their retention heatmap, and GMV and
  orders per week (per month for periods longer than 26 weeks), from one grouped query
  here (`trend_series`).

Everything is inline: CSS in a `<style>` element, charts as `<svg>` (engine/measurement/
charts.py, drawn by matplotlib), no script, no font, no image, no link to fetch, so the
file opens anywhere without a network. The layout is one column that fits a phone;
wide tables scroll inside their own box. It is rendered by Jinja2 in a sandboxed,
autoescaping environment from templates/report.html.jinja, shipped in the package:
rule descriptions, variant and rule names are text, never markup. Numbers, money and
dates are formatted by Babel in the shop's locale (`[shop] locale`), in its currency
and time zone.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from babel.dates import format_date, format_datetime, format_skeleton
from babel.numbers import format_compact_currency, format_currency, format_decimal, format_percent
from markupsafe import Markup
from sqlalchemy import Connection

from engine.durations import format_duration
from engine.measurement import charts
from engine.measurement.groups import ALL_VARIANTS, CONTROL, Group, Report, RuleReport
from engine.measurement.kpis import months_between
from engine.pages import page_environment
from engine.store.people import Event
from engine.store.types import UTCDateTime

events = Event.__table__

TEMPLATE = "report.html.jinja"
WEEKLY_UP_TO = timedelta(weeks=26)  # longer periods are shown per month


# ---------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Numbers:
    """Babel formatting in the shop's locale, currency and time zone."""

    locale: str
    currency: str
    zone: tzinfo

    def integer(self, value: float | None) -> str:
        return "-" if value is None else format_decimal(value, "#,##0", locale=self.locale)

    def decimal(self, value: float | None, digits: int = 2) -> str:
        if value is None:
            return "-"
        return format_decimal(value, "#,##0." + "0" * digits, locale=self.locale)

    def money(self, value: Decimal | float | None) -> str:
        if value is None:
            return "-"
        return format_currency(Decimal(str(value)), self.currency, locale=self.locale)

    def money_axis(self, value: float) -> str:
        """Short money for chart axes: ¥500, ¥1.2万, CN¥12.3K."""
        return format_compact_currency(value, self.currency, locale=self.locale, fraction_digits=1)

    def signed_money(self, value: float | None) -> str:
        """A difference of money: +¥32.42 in zh-CN, +CN¥32.42 in en."""
        if value is None:
            return "-"
        sign = "-" if value < 0 else "+"
        return sign + format_currency(Decimal(str(abs(value))), self.currency, locale=self.locale)

    def percent(self, value: float | None) -> str:
        return "-" if value is None else format_percent(value, "#,##0.0%", locale=self.locale)

    def percent_short(self, value: float | None) -> str:
        return "-" if value is None else format_percent(value, "#,##0%", locale=self.locale)

    def pts(self, value: float | None) -> str:
        """A difference of rates in percentage points: +2.5 pts."""
        if value is None:
            return "-"
        return format_decimal(value * 100, "+#,##0.0;-#,##0.0", locale=self.locale) + " pts"

    def pts_axis(self, value: float) -> str:
        """Percentage points on a chart axis: +50 pts, +2.5 pts."""
        return format_decimal(value * 100, "+#,##0.#;-#,##0.#", locale=self.locale) + " pts"

    def p_value(self, value: float | None) -> str:
        """`= 0.018`, `< 0.001`: what follows "p" (as in the text report)."""
        if value is None:
            return "-"
        if value < 0.001:
            return "< " + format_decimal(0.001, "0.000", locale=self.locale)
        return "= " + format_decimal(value, "0.000", locale=self.locale)

    def instant(self, value: datetime) -> str:
        return format_datetime(value, "medium", tzinfo=self.zone, locale=self.locale)

    def day(self, value: datetime) -> str:
        return format_date(value.astimezone(self.zone).date(), "medium", locale=self.locale)


def numbers_for(settings) -> Numbers:
    from engine.creatives.loader import babel_locale

    return Numbers(babel_locale(settings.shop.locale), settings.shop.currency, settings.tz)


# ---------------------------------------------------------------- data


def collect_kpis(store, since: datetime, until: datetime) -> dict[str, Any]:
    """`shop_report` for [since, until), plus `trends`: GMV and orders per week or month."""
    from engine.stats import shop_report

    settings = store.settings
    with store.read() as connection:
        kpis = shop_report(connection, settings, since=since, until=until)
        kpis["trends"] = trend_series(connection, settings, since=since, until=until)
    return kpis


@dataclass(frozen=True)
class Bucket:
    starts: datetime
    ends: datetime


def trend_buckets(since: datetime, until: datetime, zone) -> tuple[str, list[Bucket]]:
    """[since, until) cut into weeks from `since` (shop-local days), or into shop-local
    calendar months when it is longer than 26 weeks; the first and last are clipped."""
    if until - since <= WEEKLY_UP_TO:
        local, buckets = since.astimezone(zone), []
        starts = since
        while starts < until:
            ends = min(local + timedelta(days=7 * (len(buckets) + 1)), until)
            buckets.append(Bucket(starts, ends))
            starts = ends
        return "week", buckets
    months = months_between(since, until, zone)
    return "month", [Bucket(max(m.starts, since), min(m.ends, until)) for m in months]


def trend_series(
    connection: Connection, settings, *, since: datetime, until: datetime
) -> dict[str, Any]:
    """Orders and GMV (purchases minus refunds) per bucket of `trend_buckets`: one grouped
    query joining the events of the period to the buckets, whatever the number of users."""
    unit, buckets = trend_buckets(since, until, settings.tz)
    selects = [
        sa.select(
            sa.literal(index, sa.Integer).label("bucket"),
            sa.literal(bucket.starts, UTCDateTime()).label("starts_at"),
            sa.literal(bucket.ends, UTCDateTime()).label("ends_at"),
        )
        for index, bucket in enumerate(buckets)
    ]
    table = (selects[0] if len(selects) == 1 else sa.union_all(*selects)).subquery("buckets")
    purchase = events.c.type == "purchase"
    refund = events.c.type == "refund"
    at = events.c.occurred_at
    query = (
        sa.select(
            table.c.bucket,
            sa.func.sum(sa.case((purchase, 1), else_=0)),
            sa.func.sum(sa.case((purchase, events.c.amount), else_=0)),
            sa.func.sum(sa.case((refund, events.c.amount), else_=0)),
        )
        .select_from(table.join(events, sa.and_(at >= table.c.starts_at, at < table.c.ends_at)))
        .where(
            events.c.type.in_(("purchase", "refund")),
            at >= sa.literal(since, UTCDateTime()),
            at < sa.literal(until, UTCDateTime()),
        )
        .group_by(table.c.bucket)
    )
    found = {
        int(index): (int(orders or 0), Decimal(str(gross or 0)) - Decimal(str(refunds or 0)))
        for index, orders, gross, refunds in connection.execute(query)
    }
    rows = []
    for index, bucket in enumerate(buckets):
        orders, gmv = found.get(index, (0, Decimal("0")))
        rows.append({"starts": bucket.starts, "ends": bucket.ends, "orders": orders, "gmv": gmv})
    return {"unit": unit, "buckets": rows}


# ---------------------------------------------------------------- the page


def render_html_report(report: Report, kpis: dict[str, Any] | None, settings) -> str:
    """The whole page as a string. `kpis` is `collect_kpis` (or `shop_report`, without
    trends); None leaves the shop section out."""
    numbers = numbers_for(settings)
    level = f"{round((1 - report.alpha) * 100)}%"
    next_steps: dict[str, list[str]] = {}
    for suggestion in getattr(report, "suggestions", None) or []:
        next_steps.setdefault(suggestion["rule"], []).append(suggestion["text"])
    context = {
        "shop": settings.shop.name,
        "since": numbers.instant(report.since),
        "until": numbers.instant(report.until),
        "zone": settings.shop.timezone,
        "currency": report.currency,
        "level": level,
        "empty_message": report.message(settings.tz),
        "rules": [
            _rule(rule, index, numbers, level) | {"next_steps": next_steps.get(rule.rule, [])}
            for index, rule in enumerate(report.rules, 1)
        ],
        "shop_kpis": None if kpis is None else _shop(kpis, numbers),
    }
    return page_environment("engine.measurement").get_template(TEMPLATE).render(context)


def write_html_report(store, report: Report, path: str | os.PathLike[str]) -> Path:
    """Collect the shop KPIs of the report's period, render the page and write it
    atomically (a reader never sees half a file). Returns the path written."""
    page = render_html_report(
        report, collect_kpis(store, report.since, report.until), store.settings
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(page)
        # mkstemp makes the file private; a report is meant to be shared like any file
        # the user writes (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _rule(rule: RuleReport, index: int, n: Numbers, level: str) -> dict[str, Any]:
    treated, control = rule.treated, rule.control
    key = f"rule{index}"
    steps = [
        ("audience", rule.audience),
        ("planned", treated.audience),
        ("delivered", treated.recipients),
        ("converted", treated.conversions),
    ]
    audience = [f"held out {n.integer(rule.held_out)}"]
    audience += [f"suppressed ({r}) {n.integer(c)}" for r, c in sorted(rule.suppressed.items())]
    if rule.shadow:
        audience.append(f"shadow {n.integer(rule.shadow)}")
    delivery = [f"skipped ({r}) {n.integer(c)}" for r, c in sorted(treated.skipped.items())]
    if treated.dead:
        delivery.append(f"dead {n.integer(treated.dead)}")
    if treated.pending:
        delivery.append(f"pending {n.integer(treated.pending)}")

    columns = list(rule.variants)
    if len(rule.variants) > 1:
        columns.append(treated)
    columns.append(control)
    names = [_group_name(group, rule) for group in columns]

    comparisons = [(f"{_group_name(treated, rule)} vs {CONTROL}", rule.lift)]
    if len(rule.variants) > 1:
        comparisons += [(f"{v.name} vs {CONTROL}", v.lift or {}) for v in rule.variants]
    comparisons += [(f"{c['b']} vs {c['a']}", c["lift"]) for c in rule.comparisons]
    lifts = [_lift_row(label, lift, n, n.pts) for label, lift in comparisons]
    drawable = [
        charts.Interval(
            row["label"],
            row["raw"]["absolute"],
            (row["raw"]["ci_low"], row["raw"]["ci_high"]),
            (row["raw"]["always_valid_low"], row["raw"]["always_valid_high"]),
        )
        for row in lifts
        if row["measured"]
    ]
    revenue = treated.revenue_lift or {}
    incremental = None
    if treated.incremental_conversions is not None:
        incremental = {
            "conversions": n.decimal(treated.incremental_conversions, 1),
            "revenue": n.money(treated.incremental_revenue),
            "cost": n.money(treated.cost),
            "coupons": n.money(treated.coupon_cost),
            "sends": n.money(treated.send_cost),
            "roi": "-" if treated.roi is None else n.decimal(treated.roi, 2),
        }
    return {
        "anchor": key,
        "id": rule.rule,
        "description": rule.description,
        "window": format_duration(rule.window),
        "funnel": Markup(charts.funnel(steps, n.integer, n.percent, f"{key}-funnel")),
        "steps": [(label, n.integer(count)) for label, count in steps],
        "audience_note": ", ".join(audience),
        "delivery_note": ", ".join(delivery),
        "columns": names,
        "table": _group_table(columns, control, n),
        "groups_chart": Markup(
            charts.groups(
                names,
                [group.conversion_rate for group in columns],
                [_float(group.revenue_per_recipient) for group in columns],
                n.percent,
                n.money,
                f"{key}-groups",
            )
        ),
        "verdict": rule.lift["verdict"],
        "lifts": lifts,
        "lift_chart": (
            Markup(charts.lift(drawable, n.pts_axis, level, f"{key}-lift")) if drawable else None
        ),
        "revenue": (
            _lift_row("revenue per recipient", revenue, n, n.signed_money) if revenue else None
        ),
        "incremental": incremental,
        "notes": list(rule.notes),
    }


def _group_name(group: Group, rule: RuleReport) -> str:
    return ALL_VARIANTS if group is rule.treated and len(rule.variants) > 1 else group.name


def _group_table(columns: list[Group], control: Group, n: Numbers) -> list[dict[str, Any]]:
    def row(label: str, value, *, treated_only: bool = False) -> dict[str, Any]:
        return {
            "label": label,
            "cells": ["" if treated_only and g is control else value(g) for g in columns],
        }

    return [
        row("recipients", lambda g: n.integer(g.recipients)),
        row("conversions", lambda g: n.integer(g.conversions)),
        row("conversion rate", lambda g: n.percent(g.conversion_rate)),
        row("orders", lambda g: n.integer(g.orders)),
        row("revenue", lambda g: n.money(g.revenue)),
        row("revenue per recipient", lambda g: n.money(g.revenue_per_recipient)),
        row("coupons redeemed", lambda g: n.integer(g.coupons_redeemed), treated_only=True),
        row("coupon cost", lambda g: n.money(g.coupon_cost), treated_only=True),
        row("sends", lambda g: n.integer(sum(g.sends.values())), treated_only=True),
        row("send cost", lambda g: n.money(g.send_cost), treated_only=True),
    ]


def _lift_row(label: str, lift: dict[str, Any], n: Numbers, unit) -> dict[str, Any]:
    needed = ("absolute", "ci_low", "ci_high", "always_valid_low", "always_valid_high")
    measured = all(lift.get(name) is not None for name in needed)
    row = {"label": label, "verdict": lift.get("verdict") or "", "measured": measured, "raw": lift}
    if measured:
        row.update(
            difference=unit(lift["absolute"]),
            fixed=f"{unit(lift['ci_low'])} to {unit(lift['ci_high'])}",
            fixed_p=n.p_value(lift.get("p_value")),
            always_valid=f"{unit(lift['always_valid_low'])} to {unit(lift['always_valid_high'])}",
            always_valid_p=n.p_value(lift.get("always_valid_p")),
        )
    return row


def _shop(kpis: dict[str, Any], n: Numbers) -> dict[str, Any]:
    period = kpis["period"]
    ctr, spend = kpis["ctr"], kpis["spend"]
    days = period["conversion_window_days"]
    cards = [
        ("GMV (purchases - refunds)", n.money(period["gmv"])),
        ("orders", n.integer(period["orders"])),
        ("buyers", n.integer(period["buyers"])),
        ("AOV", n.money(period["aov"])),
        ("refunds", n.money(period["refunds"])),
        ("repeat-purchase rate", n.percent(period["repeat_purchase_rate"])),
        ("new users (first seen)", n.integer(period["new_users"])),
        (
            f"first-purchase conversion ({days} days)",
            n.percent(period["first_purchase_conversion"]),
        ),
        ("new buyers (first purchase)", n.integer(period["new_buyers"])),
        ("email CTR", n.percent(ctr["email"]["ctr"])),
        ("ad CTR", n.percent(ctr["ads"]["ctr"])),
    ]
    if spend["rows"]:
        cards += [
            ("ad spend", n.money(spend["cost"])),
            ("CAC", n.money(spend["cac"])),
            ("ROAS", "-" if spend["roas"] is None else n.decimal(spend["roas"], 2)),
        ]
    stages = [
        [
            row["stage"],
            n.integer(row["buyers"]),
            n.integer(row["orders"]),
            n.money(row["gmv"]),
            n.money(row["aov"]),
            n.percent(row["repeat_purchase_rate"]),
            n.integer(row["new_users"]),
            n.percent(row["first_purchase_conversion"]),
        ]
        for row in period["stages"]
    ]
    cohorts = kpis["cohorts"]
    width = max((len(row["retention"]) for row in cohorts), default=0)
    heatmap = None
    if cohorts:
        heatmap = Markup(
            charts.retention(
                [row["cohort"] for row in cohorts],
                [row["retention"] for row in cohorts],
                n.percent_short,
                "cohorts",
            )
        )
    trend = None
    series = kpis.get("trends")
    if series and not period["empty"] and series["buckets"]:
        skeleton = "MMMd" if series["unit"] == "week" else "yMMM"
        labels = [
            format_skeleton(skeleton, b["starts"].astimezone(n.zone).date(), locale=n.locale)
            for b in series["buckets"]
        ]
        trend = {
            "unit": series["unit"],
            "svg": Markup(
                charts.trends(
                    labels,
                    [float(b["gmv"]) for b in series["buckets"]],
                    [b["orders"] for b in series["buckets"]],
                    n.money_axis,
                    n.integer,
                    "trends",
                )
            ),
            "rows": [
                [label, n.integer(b["orders"]), n.money(b["gmv"])]
                for label, b in zip(labels, series["buckets"], strict=True)
            ],
        }
    return {
        "empty": period["empty"],
        "cards": cards,
        "stages": stages,
        "cohort_months": [f"M{k}" for k in range(width)],
        "cohorts": [
            {
                "cohort": row["cohort"],
                "size": n.integer(row["size"]),
                "gmv": n.money(row["gmv"]),
                "ltv": n.money(row["ltv"]),
                "retention": [n.percent(value) for value in row["retention"]]
                + [""] * (width - len(row["retention"])),
            }
            for row in cohorts
        ],
        "heatmap": heatmap,
        "trend": trend,
        "ctr": [
            [
                "email (sent)",
                n.integer(ctr["email"]["sent"]),
                n.integer(ctr["email"]["clicks"]),
                n.percent(ctr["email"]["ctr"]),
            ],  # fmt: skip
            [
                "ads (impressions)",
                n.integer(ctr["ads"]["impressions"]),
                n.integer(ctr["ads"]["clicks"]),
                n.percent(ctr["ads"]["ctr"]),
            ],  # fmt: skip
        ],
        "spend": (
            {
                "first_day": "" if spend["first_day"] is None else _date(spend["first_day"], n),
                "last_day": _date(spend["last_day"], n),
                "channels": [[row["channel"], n.money(row["cost"])] for row in spend["channels"]],
                "total": n.money(spend["cost"]),
            }
            if spend["rows"]
            else None
        ),
    }


def _date(value, n: Numbers) -> str:
    return format_date(value, "medium", locale=n.locale)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
