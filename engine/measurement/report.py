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

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.action_kinds import ACTION_KINDS
from engine.clock import ensure_aware, utcnow
from engine.durations import format_duration
from engine.errors import ConfigError, NotFoundError, NudgeError
from engine.measurement import statistics
from engine.measurement.attribution import (
    Windows,
    conversions_query,
    first_sent,
    rule_windows,
    sql_instant,
)
from engine.rules.models import did_you_mean
from engine.store.delivery import Coupon, CouponRedemption
from engine.store.people import Event
from engine.store.planning import Decision, OutboxAction

decisions = Decision.__table__
outbox = OutboxAction.__table__
coupons = Coupon.__table__
redemptions = CouponRedemption.__table__
events = Event.__table__

DEFAULT_PERIOD = timedelta(days=30)
CONTROL = "control"
TREATED = "treated"  # the name of the treated group of a rule without variants
ALL_VARIANTS = "all variants"  # the table row of the variants together
CENT = Decimal("0.01")
# Issuing a code is not a send: a coupon costs what its redemptions take off.
NOT_SENDS = ("coupon",)


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


# ---------------------------------------------------------------- the report


@dataclass
class Group:
    """One variant, all variants together (`treated`), or the control group."""

    name: str
    audience: int = 0  # decisions (planned ones for a variant, held out for the control)
    # Who the rates are over: users with a planned (treated) or held-out (control)
    # decision, reached or not (intention to treat).
    recipients: int = 0
    delivered: int = 0  # treated recipients an action reached by `until`
    conversions: int = 0  # recipients with at least one attributed purchase
    orders: int = 0
    revenue: Decimal = Decimal("0")
    revenue_sq: float = 0.0  # sum over recipients of revenue^2 (for the mean's variance)
    coupons_redeemed: int = 0
    coupon_cost: Decimal = Decimal("0")
    sends: dict[str, int] = field(default_factory=dict)
    send_cost: Decimal = Decimal("0")
    skipped: dict[str, int] = field(default_factory=dict)  # actions, by reason
    dead: int = 0
    pending: int = 0
    lift: dict[str, Any] | None = None
    revenue_lift: dict[str, Any] | None = None
    incremental_conversions: float | None = None
    incremental_revenue: Decimal | None = None
    roi: float | None = None

    @property
    def conversion_rate(self) -> float | None:
        return self.conversions / self.recipients if self.recipients else None

    @property
    def revenue_per_recipient(self) -> Decimal | None:
        return _cents(self.revenue / self.recipients) if self.recipients else None

    @property
    def cost(self) -> Decimal:
        return self.coupon_cost + self.send_cost

    def add(self, other: Group) -> None:
        for name in ("audience", "recipients", "delivered", "conversions", "orders", "revenue"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("revenue_sq", "coupons_redeemed", "coupon_cost", "send_cost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dead += other.dead
        self.pending += other.pending
        _merge(self.sends, other.sends)
        _merge(self.skipped, other.skipped)

    def as_dict(self, *, control: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "recipients": self.recipients,
            "conversions": self.conversions,
            "conversion_rate": _rate(self.conversion_rate),
            "orders": self.orders,
            "revenue": _cents(self.revenue),
            "revenue_per_recipient": self.revenue_per_recipient,
        }
        if control:
            return data
        return data | {
            "audience": self.audience,
            "delivered": self.delivered,
            "skipped": dict(sorted(self.skipped.items())),
            "dead": self.dead,
            "pending": self.pending,
            "sends": dict(sorted(self.sends.items())),
            "send_cost": _cents(self.send_cost),
            "coupons_redeemed": self.coupons_redeemed,
            "coupon_cost": _cents(self.coupon_cost),
            "lift": self.lift,
            "revenue_lift": self.revenue_lift,
            "incremental_conversions": _round(self.incremental_conversions, 2),
            "incremental_revenue": self.incremental_revenue,
            "roi": _round(self.roi, 4),
        }


@dataclass
class RuleReport:
    rule: str
    window: timedelta
    description: str = ""
    audience: int = 0
    held_out: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    shadow: int = 0
    variants: list[Group] = field(default_factory=list)
    treated: Group = field(default_factory=lambda: Group(TREATED))
    control: Group = field(default_factory=lambda: Group(CONTROL))
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lift(self) -> dict[str, Any]:
        return self.treated.lift or _no_lift("no recipients")

    def as_dict(self) -> dict[str, Any]:
        treated = self.treated
        return {
            "rule": self.rule,
            "description": self.description,
            "window": format_duration(self.window),
            "audience": self.audience,
            "planned": treated.audience,
            "held_out": self.held_out,
            "suppressed": dict(sorted(self.suppressed.items())),
            "shadow": self.shadow,
            "delivered": treated.delivered,
            "skipped": dict(sorted(treated.skipped.items())),
            "dead": treated.dead,
            "pending": treated.pending,
            "variants": [variant.as_dict() for variant in self.variants],
            "treated": treated.as_dict(),
            "control": self.control.as_dict(control=True),
            "lift": self.lift,
            "revenue_lift": treated.revenue_lift,
            "comparisons": self.comparisons,
            "incremental_conversions": _round(treated.incremental_conversions, 2),
            "incremental_revenue": treated.incremental_revenue,
            "coupon_cost": _cents(treated.coupon_cost),
            "send_cost": _cents(treated.send_cost),
            "roi": _round(treated.roi, 4),
            "notes": self.notes,
        }


@dataclass
class Report:
    since: datetime
    until: datetime
    currency: str
    alpha: float = 0.05
    rules: list[RuleReport] = field(default_factory=list)
    # Next steps for rules with a significant lift: {"rule", "command", "text"}.
    suggestions: list[dict[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rules

    def message(self, tz) -> str | None:
        if not self.empty:
            return None
        return (
            f"No decisions between {_local(self.since, tz)} and {_local(self.until, tz)}: "
            "nothing to report."
        )

    def as_dict(self, tz=None) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "currency": self.currency,
            "alpha": self.alpha,
            "attribution": "each rule on its own, from the decision time (intention to treat)",
            "empty": self.empty,
            "message": self.message(tz or UTC),
            "rules": [rule.as_dict() for rule in self.rules],
            "suggestions": self.suggestions,
        }


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
            _require_rules(connection, chosen, loaded)
        rows = _decision_rows(connection, since, until, windows, chosen)
        actions = _action_rows(connection, since, until, chosen)
        spent = _coupon_rows(connection, since, until, chosen, settings.shop.currency)
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
            _merge(found.suppressed, {row["reason"] or "unknown": row["decisions"]})
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
        group.revenue += _money(row["revenue"])
        group.revenue_sq += float(row["revenue_sq"] or 0)
    for row in actions:
        if row["rule_id"] not in by_rule:
            continue
        group = variant(row["rule_id"], row["variant"])
        state, count, sent = row["state"], row["actions"], int(row["sent_in_time"] or 0)
        if sent and row["channel"] not in NOT_SENDS:
            _merge(group.sends, {row["channel"]: sent})
            group.send_cost += costs.get(row["channel"], Decimal("0")) * sent
        if state == "sent":
            group.pending += count - sent  # sent after `until`: still pending then
        elif state == "skipped":
            _merge(group.skipped, {row["reason"] or "unknown": count})
        elif state == "dead":
            group.dead += count
        else:
            group.pending += count
    for row in spent:
        if row["rule_id"] not in by_rule:
            continue
        group = variant(row["rule_id"], row["variant"])
        group.coupons_redeemed += row["redeemed"]
        group.coupon_cost += _money(row["cost"])
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
            _measure(group, control, alpha)
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
                    "lift": _proportions(other, baseline, alpha),
                    "revenue_lift": _means(other, baseline, alpha),
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


# ---------------------------------------------------------------- queries


def _period(since: datetime, until: datetime, rule_ids: list[str] | None) -> list:
    conditions = [
        decisions.c.decided_at >= sql_instant(since),
        decisions.c.decided_at < sql_instant(until),
    ]
    if rule_ids:
        conditions.append(decisions.c.rule_id.in_(rule_ids))
    return conditions


def _decision_rows(
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


def _action_rows(
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


def _coupon_rows(
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


def _require_rules(connection: Connection, rule_ids: list[str], loaded) -> None:
    decided = set(
        connection.execute(
            sa.select(decisions.c.rule_id).where(decisions.c.rule_id.in_(rule_ids)).distinct()
        ).scalars()
    )
    known = set(loaded.rules) | set(loaded.broken)
    for rule_id in rule_ids:
        if rule_id not in known and rule_id not in decided:
            raise NotFoundError(f"no rule {rule_id!r}{did_you_mean(rule_id, sorted(known))}")


# ---------------------------------------------------------------- statistics


def _measure(group: Group, control: Group, alpha: float) -> None:
    group.lift = _proportions(group, control, alpha)
    group.revenue_lift = _means(group, control, alpha)
    n_t = group.recipients
    absolute = group.lift.get("absolute")
    if absolute is not None:
        group.incremental_conversions = absolute * n_t
    revenue_absolute = group.revenue_lift.get("absolute")
    if revenue_absolute is not None:
        group.incremental_revenue = _cents(Decimal(str(revenue_absolute)) * n_t)
    if group.incremental_revenue is not None and group.cost > 0:
        group.roi = float((group.incremental_revenue - group.cost) / group.cost)


def _proportions(treated: Group, control: Group, alpha: float) -> dict[str, Any]:
    names = (treated.name, control.name)
    if treated.recipients < 1 or control.recipients < 1:
        return _no_lift(_missing(treated, control))
    lift = statistics.compare_proportions(
        treated.conversions,
        treated.recipients,
        control.conversions,
        control.recipients,
        alpha=alpha,
    )
    text = statistics.verdict(lift, treated.recipients, control.recipients, names=names)
    return _lift_dict(lift, text)


def _means(treated: Group, control: Group, alpha: float) -> dict[str, Any]:
    names = (treated.name, control.name)
    if treated.recipients < 2 or control.recipients < 2:
        return _no_lift(_missing(treated, control, at_least=2))
    lift = statistics.compare_means(
        float(treated.revenue),
        treated.revenue_sq,
        treated.recipients,
        float(control.revenue),
        control.revenue_sq,
        control.recipients,
        alpha=alpha,
    )
    text = statistics.verdict(lift, treated.recipients, control.recipients, names=names)
    return _lift_dict(lift, text)


def _missing(treated: Group, control: Group, at_least: int = 1) -> str:
    short = [g.name for g in (treated, control) if g.recipients < at_least]
    need = "any recipients" if at_least == 1 else f"at least {at_least} recipients"
    return f"not enough data yet ({' and '.join(short)} without {need})"


LIFT_FIELDS = (
    "treated",
    "control",
    "absolute",
    "relative",
    "ci_low",
    "ci_high",
    "p_value",
    "always_valid_low",
    "always_valid_high",
    "always_valid_p",
)


def _lift_dict(lift, text: str) -> dict[str, Any]:
    data = {name: _finite(getattr(lift, name)) for name in LIFT_FIELDS}
    return data | {"verdict": text}


def _no_lift(reason: str) -> dict[str, Any]:
    return dict.fromkeys(LIFT_FIELDS) | {"verdict": reason}


# ---------------------------------------------------------------- text


def render_report(report: Report, tz) -> str:
    """The report as text: a header, then per rule its funnel, a table and the verdicts."""
    from engine.stats import format_money, format_rate

    if report.empty:
        return report.message(tz) or ""
    currency = report.currency
    lines = [
        f"Report for decisions from {_local(report.since, tz)} to {_local(report.until, tz)}",
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
                f"{format_money(_cents(treated.cost), currency)} (coupons "
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
    return "-" if value is None else f"{_cents(value):,.2f}"


def _local(value: datetime, tz) -> str:
    return value.astimezone(tz).isoformat(sep=" ", timespec="seconds")


# ---------------------------------------------------------------- numbers


def _merge(into: dict[str, int], more: dict[str, int]) -> None:
    for key, count in more.items():
        into[key] = into.get(key, 0) + count


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def _cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _round(value: float | None, digits: int) -> float | None:
    value = _finite(value)
    return None if value is None else round(value, digits)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
