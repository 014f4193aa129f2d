"""`nudge report` as text: a table per rule, its lift verdicts, notes and suggestions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.durations import format_duration
from engine.measurement.groups import ALL_VARIANTS, Report, cents, local_text

# ---------------------------------------------------------------- text


def render_report(report: Report, tz) -> str:
    """The report as text: a header, then per rule its funnel, a table and the verdicts."""
    from engine.stats import format_money, format_rate

    if report.empty:
        return report.message(tz) or ""
    currency = report.currency
    lines = [
        f"Report for decisions from {local_text(report.since, tz)} "
        f"to {local_text(report.until, tz)}",
        "Attribution: each rule on its own, purchases within its window after the "
        f"decision (treated and held out alike). Money in {currency}.",
    ]
    for rule in report.rules:
        treated = rule.treated
        lines += ["", f"{rule.rule}  (window {format_duration(rule.window)})"]
        if rule.description:
            lines.append(f"  {rule.description}")
        funnel = f"  audience {rule.audience}: planned {treated.audience}, held out {rule.held_out}"
        if rule.suppressed:
            funnel += ", suppressed " + _counts(rule.suppressed)
        if rule.shadow:
            funnel += f", shadow {rule.shadow}"
        lines.append(funnel)
        delivery = f"  delivered {treated.delivered}"
        if treated.skipped:
            delivery += "; skipped actions: " + _counts(treated.skipped)
        if treated.dead:
            delivery += f"; dead {treated.dead}"
        if treated.pending:
            delivery += f"; pending {treated.pending}"
        lines.append(delivery)
        headers = ["group", "recipients", "conversions", "rate", "revenue", "per recipient"]
        headers += ["coupon cost", "sends", "send cost"]
        rows = []
        groups = [*rule.variants, rule.control]
        if len(rule.variants) > 1:
            groups.insert(len(rule.variants), treated)
        for group in groups:
            is_control = group is rule.control
            rows.append(
                [
                    ALL_VARIANTS if group is treated else group.name,
                    group.recipients,
                    group.conversions,
                    format_rate(group.conversion_rate),
                    _amount(group.revenue),
                    _amount(group.revenue_per_recipient),
                    "" if is_control else _amount(group.coupon_cost),
                    "" if is_control else sum(group.sends.values()),
                    "" if is_control else _amount(group.send_cost),
                ]
            )
        lines += ["  " + line for line in _table(headers, rows)]
        lift = rule.lift
        if lift.get("absolute") is not None:
            level = round((1 - report.alpha) * 100)
            lines += [
                f"  conversion rate, {treated.name} - control: {_pts(lift['absolute'])}",
                f"    fixed horizon: {level}% CI {_interval(lift['ci_low'], lift['ci_high'])}, "
                f"p {_p(lift['p_value'])}",
                f"    always valid:  {level}% CI "
                f"{_interval(lift['always_valid_low'], lift['always_valid_high'])}, "
                f"p {_p(lift['always_valid_p'])}",
            ]
        lines.append(f"  verdict: {lift['verdict']}")
        revenue_lift = treated.revenue_lift or {}
        if revenue_lift.get("absolute") is not None:
            lines.append(f"  revenue per recipient: {revenue_lift['verdict']}")
        if treated.incremental_conversions is not None:
            lines.append(
                f"  incremental: {_number(treated.incremental_conversions)} conversions, "
                f"{format_money(treated.incremental_revenue, currency)} revenue; cost "
                f"{format_money(cents(treated.cost), currency)} (coupons "
                f"{_amount(treated.coupon_cost)}, sends {_amount(treated.send_cost)}); ROI "
                + ("-" if treated.roi is None else f"{treated.roi:.2f}")
            )
        if len(rule.variants) > 1:
            for variant in rule.variants:
                lines.append(f"  {variant.name} vs control: {(variant.lift or {})['verdict']}")
        for comparison in rule.comparisons:
            lines.append(
                f"  {comparison['b']} vs {comparison['a']}: {comparison['lift']['verdict']}"
            )
        for note in rule.notes:
            lines.append(f"  note: {note}")
    if report.suggestions:
        lines += ["", "Suggestions:"]
        lines += [f"  {suggestion['text']}" for suggestion in report.suggestions]
    return "\n".join(lines)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


def _pts(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def _interval(low: float, high: float) -> str:
    return f"{low * 100:+.1f} to {high * 100:+.1f} pts"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _amount(value: Decimal | None) -> str:
    return "-" if value is None else f"{cents(value):,.2f}"
