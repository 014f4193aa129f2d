"""`nudge report`: per rule and variant, who was reached, who bought, and what it earned.

For the decisions made in a period [since, until) (default: the 30 days before now),
per rule and per variant:

- audience: the decisions; held out, suppressed (by reason) and shadow ones apart;
- recipients: the users with a planned (treated) or held-out (control) decision,
  reached or not (intention to treat); delivered: the treated recipients an action
  reached by `until`; skipped actions by reason, dead and still pending ones;
- conversions (recipients with at least one attributed purchase), orders, revenue
  (refunds subtracted) and revenue per recipient, attributed by
  engine/measurement/attribution.py (each rule on its own, from the decision time);
- coupon cost: the coupons of the rule redeemed by `until`, at face value (an amount
  coupon in another currency converted at the purchase's own rate), or for a
  `percent_off` coupon that percentage of the order amount;
- sends per channel and their cost, from `[delivery] costs = {email = 0.001, sms = 0.05}`
  in nudge.toml (per send, in the shop currency; channels not listed cost nothing);
- lift against the held-out control group (engine.measurement.statistics): conversion
  rate and revenue per recipient, each with a fixed-horizon and an always-valid interval,
  and one verdict sentence; variants are compared with the first one too;
- incremental conversions and revenue, (rate_t - rate_c) * n_t and
  (rpr_t - rpr_c) * n_t, and ROI = (incremental revenue - coupon cost - send cost) /
  (coupon cost + send cost).

Three grouped queries do the counting, whatever the number of users; Python only adds up
the few per-rule rows and calls the statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from engine.action_kinds import ACTION_KINDS
from engine.clock import ensure_aware, utcnow
from engine.durations import format_duration
from engine.errors import ConfigError, NudgeError
from engine.measurement.attribution import rule_windows
from engine.measurement.groups import (
    NOT_SENDS,
    TREATED,
    Group,
    Report,
    RuleReport,
    means,
    measure,
    merge_counts,
    money,
    proportions,
)
from engine.measurement.report_queries import action_rows, coupon_rows, decision_rows, require_rules
from engine.measurement.report_text import render_report
from engine.rules.fields import did_you_mean

__all__ = ["Report", "build_report", "render_report", "send_costs"]

DEFAULT_PERIOD = timedelta(days=30)


def option_instant(option: str, value: str | None, tz) -> datetime | None:
    """`--since` / `--until`: ISO 8601 date or date-time, shop time when no offset."""
    from engine.planning.timeparse import parse_instant

    if value is None:
        return None
    try:
        return parse_instant(value, tz)
    except NudgeError as exc:
        raise NudgeError(str(exc).replace("--at", option, 1)) from None


# ---------------------------------------------------------------- send costs


def send_costs(settings) -> dict[str, Decimal]:
    """`[delivery] costs` of nudge.toml: channel -> cost of one send in the shop currency.

    Every problem is reported at once, each at its dotted key, like the rest of the
    `[delivery]` section: `nudge.toml: delivery.costs.emial: unknown channel ...`.
    """

    source = str(settings.config_path) if getattr(settings, "config_path", None) else "nudge.toml"
    raw = (settings.delivery or {}).get("costs", {})
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: delivery.costs: must be a table of channel = cost per send in the "
            f"shop currency, e.g. costs = {{email = 0.001, sms = 0.05}}; got {raw!r}"
        )
    channels = sorted({kind.channel for kind in ACTION_KINDS.values()} - set(NOT_SENDS))
    problems, costs = [], {}
    for channel, value in raw.items():
        where = f"{source}: delivery.costs.{channel}"
        if channel not in channels:
            hint = did_you_mean(str(channel), channels) or f"; channels: {', '.join(channels)}"
            problems.append(f"{where}: unknown channel{hint}")
            continue
        number = None
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            number = Decimal(str(value))
        if number is None or not number.is_finite() or number < 0:
            problems.append(
                f"{where}: must be a number >= 0 (the cost of one send in the shop "
                f"currency), got {value!r}"
            )
            continue
        costs[channel] = number
    if problems:
        raise ConfigError("\n".join(problems))
    return costs


def build_report(
    store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    rule_ids: Iterable[str] | None = None,
    alpha: float = 0.05,
) -> Report:
    """The report for the decisions made in [since, until); see the module docstring."""
    from engine.rules import load_rules

    settings = store.settings
    costs = send_costs(settings)  # a bad nudge.toml fails before any query
    until = ensure_aware(until) if until is not None else utcnow()
    since = ensure_aware(since) if since is not None else until - DEFAULT_PERIOD
    if since >= until:
        raise NudgeError(
            f"the period is empty: --since {since.isoformat()} is not before "
            f"--until {until.isoformat()}"
        )
    loaded = load_rules(settings.rules_dir)
    windows = rule_windows(loaded.rules.values())
    chosen = sorted(set(rule_ids)) if rule_ids else None
    report = Report(since=since, until=until, currency=settings.shop.currency, alpha=alpha)
    with store.read() as connection:
        if chosen:
            require_rules(connection, chosen, loaded)
        rows = decision_rows(connection, since, until, windows, chosen)
        actions = action_rows(connection, since, until, chosen)
        spent = coupon_rows(connection, since, until, chosen, settings.shop.currency)
    by_rule: dict[str, RuleReport] = {}
    for rule_id in sorted({row["rule_id"] for row in rows}):
        rule = loaded.rules.get(rule_id)
        found = RuleReport(rule=rule_id, window=windows.of(rule_id))
        if rule is not None:
            found.description = rule.description
        else:
            found.notes.append(
                f"rules/{rule_id}.yaml is missing or invalid: its attribution window is "
                f"taken as the default {format_duration(windows.default)}"
            )
        by_rule[rule_id] = found
    variant_groups: dict[tuple[str, str | None], Group] = {}

    def variant(rule_id: str, name: str | None) -> Group:
        key = (rule_id, name)
        if key not in variant_groups:
            variant_groups[key] = Group(name or TREATED)
        return variant_groups[key]

    for row in rows:
        found = by_rule[row["rule_id"]]
        found.audience += row["decisions"]
        outcome = row["outcome"]
        if outcome == "suppressed":
            merge_counts(found.suppressed, {row["reason"] or "unknown": row["decisions"]})
            continue
        if outcome == "shadow":
            found.shadow += row["decisions"]
            continue
        if outcome == "held_out":
            found.held_out += row["decisions"]
            group = found.control
        else:
            group = variant(row["rule_id"], row["variant"])
        group.audience += row["decisions"]
        group.recipients += row["recipients"]
        group.delivered += row["delivered"]
        group.conversions += row["conversions"]
        group.orders += row["orders"]
        group.revenue += money(row["revenue"])
        group.revenue_sq += float(row["revenue_sq"] or 0)
    for row in actions:
        if row["rule_id"] not in by_rule:
            continue
        group = variant(row["rule_id"], row["variant"])
        state, count, sent = row["state"], row["actions"], int(row["sent_in_time"] or 0)
        if sent and row["channel"] not in NOT_SENDS:
            merge_counts(group.sends, {row["channel"]: sent})
            group.send_cost += costs.get(row["channel"], Decimal("0")) * sent
        if state == "sent":
            group.pending += count - sent  # sent after `until`: still pending then
        elif state == "skipped":
            merge_counts(group.skipped, {row["reason"] or "unknown": count})
        elif state == "dead":
            group.dead += count
        else:
            group.pending += count
    for row in spent:
        if row["rule_id"] not in by_rule:
            continue
        group = variant(row["rule_id"], row["variant"])
        group.coupons_redeemed += row["redeemed"]
        group.coupon_cost += money(row["cost"])
    for rule_id, found in by_rule.items():
        order = _variant_order(loaded.rules.get(rule_id))
        names = sorted(
            (name for (rid, name) in variant_groups if rid == rule_id),
            key=lambda name: (order.get(name, len(order)), name or ""),
        )
        found.variants = [variant_groups[(rule_id, name)] for name in names]
        for group in found.variants:
            found.treated.add(group)
        if len(found.variants) == 1:
            found.treated.name = found.variants[0].name
        control = found.control
        for group in [*found.variants, found.treated]:
            measure(group, control, alpha)
        if control.recipients == 0:
            found.notes.append(
                "no held-out users: lift cannot be measured (give the rule "
                "`experiment: {holdout: 10%}`)"
            )
        baseline = found.variants[0] if len(found.variants) > 1 else None
        for other in found.variants[1:]:
            found.comparisons.append(
                {
                    "a": baseline.name,
                    "b": other.name,
                    "lift": proportions(other, baseline, alpha),
                    "revenue_lift": means(other, baseline, alpha),
                }
            )
        report.rules.append(found)
    report.suggestions = _suggestions(report, settings.tz)
    return report


def _suggestions(report: Report, tz) -> list[dict[str, str]]:
    """Rules whose treated users convert significantly better than the control group
    (always-valid interval above 0): their converters are the seed of a lookalike
    audience, `nudge audiences export-converters` (engine/measurement/converters.py)."""
    found = []
    for rule in report.rules:
        lift = rule.lift
        low, p = lift.get("always_valid_low"), lift.get("always_valid_p")
        if low is None or p is None or not (low > 0 and p <= report.alpha):
            continue
        since = report.since.astimezone(tz).isoformat(timespec="seconds")
        until = report.until.astimezone(tz).isoformat(timespec="seconds")
        command = (
            f"nudge audiences export-converters {rule.rule} --format google "
            f"--since {since} --until {until}"
        )
        found.append(
            {
                "rule": rule.rule,
                "command": command,
                "text": (
                    f"{rule.rule} converts better than its control group: seed a lookalike "
                    f"audience with the users it converted: {command} (or --format meta)"
                ),
            }
        )
    return found


def _variant_order(rule) -> dict[str | None, int]:
    experiment = getattr(rule, "experiment", None)
    names = list(experiment.variants) if experiment is not None else []
    return {name: index for index, name in enumerate(names)}
