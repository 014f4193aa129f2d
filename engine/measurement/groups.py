"""The report's figures: per rule, its variants, the treated and control groups, and
the lift between them (engine.measurement.statistics), with the number formats of the
JSON output."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from engine.durations import format_duration
from engine.measurement import statistics

CONTROL = "control"
TREATED = "treated"  # the name of the treated group of a rule without variants
ALL_VARIANTS = "all variants"  # the table row of the variants together
CENT = Decimal("0.01")
# Issuing a code is not a send: a coupon costs what its redemptions take off.
NOT_SENDS = ("coupon",)

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
        return cents(self.revenue / self.recipients) if self.recipients else None

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
        merge_counts(self.sends, other.sends)
        merge_counts(self.skipped, other.skipped)

    def as_dict(self, *, control: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "recipients": self.recipients,
            "conversions": self.conversions,
            "conversion_rate": rate(self.conversion_rate),
            "orders": self.orders,
            "revenue": cents(self.revenue),
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
            "send_cost": cents(self.send_cost),
            "coupons_redeemed": self.coupons_redeemed,
            "coupon_cost": cents(self.coupon_cost),
            "lift": self.lift,
            "revenue_lift": self.revenue_lift,
            "incremental_conversions": rounded(self.incremental_conversions, 2),
            "incremental_revenue": self.incremental_revenue,
            "roi": rounded(self.roi, 4),
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
        return self.treated.lift or no_lift("no recipients")

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
            "incremental_conversions": rounded(treated.incremental_conversions, 2),
            "incremental_revenue": treated.incremental_revenue,
            "coupon_cost": cents(treated.coupon_cost),
            "send_cost": cents(treated.send_cost),
            "roi": rounded(treated.roi, 4),
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
            f"No decisions between {local_text(self.since, tz)} and {local_text(self.until, tz)}: "
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


# ---------------------------------------------------------------- statistics


def measure(group: Group, control: Group, alpha: float) -> None:
    group.lift = proportions(group, control, alpha)
    group.revenue_lift = means(group, control, alpha)
    n_t = group.recipients
    absolute = group.lift.get("absolute")
    if absolute is not None:
        group.incremental_conversions = absolute * n_t
    revenue_absolute = group.revenue_lift.get("absolute")
    if revenue_absolute is not None:
        group.incremental_revenue = cents(Decimal(str(revenue_absolute)) * n_t)
    if group.incremental_revenue is not None and group.cost > 0:
        group.roi = float((group.incremental_revenue - group.cost) / group.cost)


def proportions(treated: Group, control: Group, alpha: float) -> dict[str, Any]:
    names = (treated.name, control.name)
    if treated.recipients < 1 or control.recipients < 1:
        return no_lift(_missing(treated, control))
    lift = statistics.compare_proportions(
        treated.conversions,
        treated.recipients,
        control.conversions,
        control.recipients,
        alpha=alpha,
    )
    text = statistics.verdict(lift, treated.recipients, control.recipients, names=names)
    return _lift_dict(lift, text)


def means(treated: Group, control: Group, alpha: float) -> dict[str, Any]:
    names = (treated.name, control.name)
    if treated.recipients < 2 or control.recipients < 2:
        return no_lift(_missing(treated, control, at_least=2))
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
    data = {name: finite(getattr(lift, name)) for name in LIFT_FIELDS}
    return data | {"verdict": text}


def no_lift(reason: str) -> dict[str, Any]:
    return dict.fromkeys(LIFT_FIELDS) | {"verdict": reason}


def local_text(value: datetime, tz) -> str:
    return value.astimezone(tz).isoformat(sep=" ", timespec="seconds")


# ---------------------------------------------------------------- numbers


def merge_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for key, count in more.items():
        into[key] = into.get(key, 0) + count


def money(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def rounded(value: float | None, digits: int) -> float | None:
    value = finite(value)
    return None if value is None else round(value, digits)


def finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
