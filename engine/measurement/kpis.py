"""Shop KPIs over a period [since, until): totals, per lifecycle stage, per cohort, CTR, CAC, ROAS.

The definitions (Nudge's design, the same everywhere):

- GMV: purchase amounts minus refund amounts of the events in the period;
  orders: purchases in the period; buyers: users with at least one of them;
  AOV: GMV / orders; repeat-purchase rate: buyers with two or more orders / buyers.
- first-purchase conversion: of the users first seen in the period (their first
  event of any kind), the share whose first purchase came within `conversion_days`
  (30) of it, and before `until` (a user first seen near `until` has had less time).
- new buyers: users whose first purchase ever is in the period.
- per stage: the same, grouped by each user's lifecycle stage as of `until`
  (engine/lifecycle/); the totals are the sums of the stage rows.
- cohorts: the new buyers grouped by the shop-local calendar month of their first
  purchase. Size; LTV to date = the cohort's GMV from each user's first purchase up
  to `until`, per user; retention month k = the share of the cohort buying in the
  k-th calendar month after the first-purchase month (month 0 is 100% by definition),
  for the months that have started before `until`.
- CTR: `email_click` events / emails sent (outbox rows of kind email in state sent,
  by sent_at) and `ad_click` / `ad_impression` events, all in the period.
- ad spend (spend files, table ad_spend): the shop-local days whose start lies in the
  period; CAC = spend / new buyers; ROAS = GMV / spend (blended: all revenue of the
  period, not only what ads brought). Both are None when no spend row falls in the
  period (spend not ingested is unknown, not zero).

Money is in the shop currency (ingest converts purchases, refunds and spend). A ratio
whose denominator is zero is None, never a division error. Every figure is one
set-based query (grouped by stage, by cohort and month, by event type, by channel);
Python only assembles the few resulting rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection, FromClause

from engine.clock import ensure_aware
from engine.config import Settings
from engine.errors import NudgeError
from engine.lifecycle import FUNNEL_ORDER, stage_case
from engine.localtime import day_start
from engine.store.marketing import AdSpend
from engine.store.people import Event, User
from engine.store.planning import OutboxAction
from engine.store.profiles import profiles_as_of
from engine.store.sql import plus_duration
from engine.store.types import UTCDateTime

events = Event.__table__
users = User.__table__
outbox = OutboxAction.__table__
ad_spend = AdSpend.__table__

CONVERSION_DAYS = 30
CENT = Decimal("0.01")
# Event types the CTR counts (docs/ingest.md lists them).
EMAIL_CLICK, AD_CLICK, AD_IMPRESSION = "email_click", "ad_click", "ad_impression"


@dataclass(frozen=True)
class Month:
    """One shop-local calendar month, as the instants [starts, ends)."""

    label: str  # 2026-02
    starts: datetime
    ends: datetime


def shop_kpis(
    connection: Connection,
    settings: Settings,
    *,
    since: datetime | None,
    until: datetime,
    conversion_days: int = CONVERSION_DAYS,
) -> dict[str, Any]:
    """Every shop KPI for events at or after `since` (None: from the first) and before
    `until`; stages as of `until`. Money values are Decimals, rates floats in [0, 1]."""
    until = ensure_aware(until)
    if since is not None and ensure_aware(since) >= until:
        shown = [value.astimezone(settings.tz).isoformat(sep=" ") for value in (since, until)]
        raise NudgeError(f"--since ({shown[0]}) must be before --until ({shown[1]})")
    period = _Period(since, until, settings.tz)
    profiles = profiles_as_of(connection, until)
    totals, stages = _by_stage(connection, settings, period, profiles, conversion_days)
    cohorts = _cohorts(connection, period, profiles)
    ctr = _ctr(connection, period)
    spend = _spend(connection, period, totals)
    empty = not any(
        (
            totals["orders"],
            totals["refunds"],
            totals["new_users"],
            ctr["email"]["sent"],
            ctr["email"]["clicks"],
            ctr["ads"]["impressions"],
            ctr["ads"]["clicks"],
            spend["rows"],
        )
    )
    return {
        "since": since,
        "until": until,
        "currency": settings.shop.currency,
        "empty": empty,
        "conversion_window_days": conversion_days,
        "totals": totals,
        "stages": stages,
        "cohorts": cohorts,
        "ctr": ctr,
        "spend": spend,
    }


class _Period:
    """[since, until) as SQL conditions, and as the shop-local days it covers."""

    def __init__(self, since: datetime | None, until: datetime, zone: ZoneInfo):
        self.since = since
        self.until = until
        self.zone = zone

    def holds(self, column: ColumnElement) -> ColumnElement[bool]:
        before = column < _instant(self.until)
        if self.since is None:
            return before
        return sa.and_(column >= _instant(self.since), before)

    def days(self) -> tuple[date | None, date]:
        """[first, end) of the shop-local days whose first instant is in the period."""
        first = None if self.since is None else _first_day_from(self.since, self.zone)
        return first, _first_day_from(self.until, self.zone)


def _instant(value: datetime) -> ColumnElement[datetime]:
    return sa.literal(ensure_aware(value), UTCDateTime())


def _first_day_from(instant: datetime, zone: ZoneInfo) -> date:
    """The first local day starting at or after `instant`."""
    day = instant.astimezone(zone).date()
    return day if day_start(day, zone) >= instant else day + timedelta(days=1)


# ---------------------------------------------------------------- totals and stages


def _activity(period: _Period) -> FromClause:
    """Per user, the period's orders, purchase amounts and refund amounts."""
    purchase = events.c.type == "purchase"
    refund = events.c.type == "refund"
    return (
        sa.select(
            events.c.user_id,
            sa.func.sum(sa.case((purchase, 1), else_=0)).label("orders"),
            sa.func.sum(sa.case((purchase, events.c.amount), else_=0)).label("gross"),
            sa.func.sum(sa.case((refund, events.c.amount), else_=0)).label("refunds"),
        )
        .where(events.c.type.in_(("purchase", "refund")), period.holds(events.c.occurred_at))
        .group_by(events.c.user_id)
        .subquery("activity")
    )


def _by_stage(
    connection: Connection,
    settings: Settings,
    period: _Period,
    profiles: FromClause,
    conversion_days: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    activity = _activity(period)
    first_seen = profiles.c.first_seen_at
    first_purchase = profiles.c.first_purchase_at
    new_user = period.holds(first_seen)
    window_end = plus_duration(first_seen, timedelta(days=conversion_days), connection.dialect.name)
    # first_purchase_at is the earliest purchase, so "bought within the window" is it.
    converted = sa.and_(
        new_user, first_purchase <= window_end, first_purchase < _instant(period.until)
    )
    orders = sa.func.coalesce(activity.c.orders, 0)
    per_user = (
        sa.select(
            stage_case(users, profiles, as_of=period.until, settings=settings.lifecycle).label(
                "stage"
            ),
            orders.label("orders"),
            sa.func.coalesce(activity.c.gross, 0).label("gross"),
            sa.func.coalesce(activity.c.refunds, 0).label("refunds"),
            sa.case((new_user, 1), else_=0).label("new_user"),
            sa.case((converted, 1), else_=0).label("converted"),
            sa.case((period.holds(first_purchase), 1), else_=0).label("new_buyer"),
        )
        .select_from(
            users.outerjoin(profiles, profiles.c.user_id == users.c.id).outerjoin(
                activity, activity.c.user_id == users.c.id
            )
        )
        .subquery("per_user")
    )
    count_if = lambda condition: sa.func.sum(sa.case((condition, 1), else_=0))  # noqa: E731
    grouped = (
        sa.select(
            per_user.c.stage,
            sa.func.count(),
            count_if(per_user.c.orders > 0),
            count_if(per_user.c.orders > 1),
            sa.func.sum(per_user.c.orders),
            sa.func.sum(per_user.c.gross),
            sa.func.sum(per_user.c.refunds),
            sa.func.sum(per_user.c.new_user),
            sa.func.sum(per_user.c.converted),
            sa.func.sum(per_user.c.new_buyer),
        )
        .where(per_user.c.stage.is_not(None))
        .group_by(per_user.c.stage)
    )
    found = {row[0]: row[1:] for row in connection.execute(grouped)}
    stages = []
    for stage in FUNNEL_ORDER:
        values = found.get(stage, (0,) * 9)
        counts = [int(value or 0) for value in (*values[:4], *values[6:])]
        gross, refunds = money(values[4]), money(values[5])
        stages.append(_figures({"stage": stage}, counts, gross, refunds))
    sums = [sum(row[key] for row in stages) for key in _COUNT_KEYS]
    gross = sum((row["gross"] for row in stages), money(0))
    refunds = sum((row["refunds"] for row in stages), money(0))
    totals = _figures({}, sums, gross, refunds)
    for row in stages:
        row["share"] = rate(row["users"], totals["users"])
    return totals, stages


_COUNT_KEYS = ("users", "buyers", "repeat_buyers", "orders", "new_users", "converted", "new_buyers")


def _figures(
    row: dict[str, Any], counts: list[int], gross: Decimal, refunds: Decimal
) -> dict[str, Any]:
    row.update(zip(_COUNT_KEYS, counts, strict=True))
    gmv = gross - refunds
    row.update(
        gross=gross,
        refunds=refunds,
        gmv=gmv,
        aov=money_ratio(gmv, row["orders"]),
        repeat_purchase_rate=rate(row["repeat_buyers"], row["buyers"]),
        first_purchase_conversion=rate(row["converted"], row["new_users"]),
    )
    return row


# ---------------------------------------------------------------- cohorts


def months_between(first: datetime, until: datetime, zone: ZoneInfo) -> list[Month]:
    """The shop-local calendar months from the one holding `first` to the last one
    that starts before `until`."""
    local = first.astimezone(zone)
    year, month = local.year, local.month
    months: list[Month] = []
    while True:
        starts = day_start(date(year, month, 1), zone)
        if months and starts >= until:
            return months
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        ends = day_start(date(year, month, 1), zone)
        months.append(Month(f"{starts.astimezone(zone):%Y-%m}", starts, ends))


def _months_table(months: list[Month], name: str) -> FromClause:
    """The months as a derived table (index, starts_at, ends_at) to join instants with."""
    selects = [
        sa.select(
            sa.literal(index, sa.Integer).label("month_index"),
            _instant(month.starts).label("starts_at"),
            _instant(month.ends).label("ends_at"),
        )
        for index, month in enumerate(months)
    ]
    table = selects[0] if len(selects) == 1 else sa.union_all(*selects)
    return table.subquery(name)


def _in_month(column: ColumnElement, months: FromClause) -> ColumnElement[bool]:
    return sa.and_(column >= months.c.starts_at, column < months.c.ends_at)


def _cohorts(connection: Connection, period: _Period, profiles: FromClause) -> list[dict]:
    first_purchase = profiles.c.first_purchase_at
    first = period.since
    if first is None:
        first = connection.execute(
            sa.select(sa.func.min(first_purchase)).where(period.holds(first_purchase))
        ).scalar()
        if first is None:
            return []
    months = months_between(first, period.until, period.zone)
    cohort_months = _months_table(months, "cohort_months")
    members = (
        sa.select(
            profiles.c.user_id,
            cohort_months.c.month_index.label("cohort"),
            first_purchase.label("first_purchase_at"),
        )
        .select_from(profiles.join(cohort_months, _in_month(first_purchase, cohort_months)))
        .where(period.holds(first_purchase))
        .subquery("members")
    )
    until = _instant(period.until)
    signed = sa.case(
        (events.c.type == "purchase", events.c.amount),
        (events.c.type == "refund", -events.c.amount),
        else_=0,
    )
    # Every member's first purchase is one of the joined events, so each cohort's
    # distinct users are its size.
    value = (
        sa.select(
            members.c.cohort,
            sa.func.count(sa.distinct(members.c.user_id)),
            sa.func.sum(signed),
        )
        .select_from(
            members.join(
                events,
                sa.and_(
                    events.c.user_id == members.c.user_id,
                    events.c.type.in_(("purchase", "refund")),
                    events.c.occurred_at >= members.c.first_purchase_at,
                    events.c.occurred_at < until,
                ),
            )
        )
        .group_by(members.c.cohort)
    )
    sizes = {cohort: (int(size), money(gmv)) for cohort, size, gmv in connection.execute(value)}
    buying_months = _months_table(months, "buying_months")
    retention = (
        sa.select(
            members.c.cohort,
            buying_months.c.month_index,
            sa.func.count(sa.distinct(members.c.user_id)),
        )
        .select_from(
            members.join(
                events,
                sa.and_(
                    events.c.user_id == members.c.user_id,
                    events.c.type == "purchase",
                    events.c.occurred_at < until,
                ),
            ).join(buying_months, _in_month(events.c.occurred_at, buying_months))
        )
        .group_by(members.c.cohort, buying_months.c.month_index)
    )
    buyers = {(cohort, index): int(n) for cohort, index, n in connection.execute(retention)}
    cohorts = []
    for index in sorted(sizes):
        size, gmv = sizes[index]
        counts = [buyers.get((index, later), 0) for later in range(index, len(months))]
        cohorts.append(
            {
                "cohort": months[index].label,
                "starts": months[index].starts,
                "size": size,
                "gmv": gmv,
                "ltv": money_ratio(gmv, size),
                "buyers_by_month": counts,
                "retention": [rate(count, size) for count in counts],
            }
        )
    return cohorts


# ---------------------------------------------------------------- CTR and spend


def _ctr(connection: Connection, period: _Period) -> dict[str, dict[str, Any]]:
    types = (EMAIL_CLICK, AD_CLICK, AD_IMPRESSION)
    counted = dict.fromkeys(types, 0)
    query = (
        sa.select(events.c.type, sa.func.count())
        .where(events.c.type.in_(types), period.holds(events.c.occurred_at))
        .group_by(events.c.type)
    )
    counted.update({kind: int(n) for kind, n in connection.execute(query)})
    sent = connection.execute(
        sa.select(sa.func.count()).where(
            outbox.c.kind == "email", outbox.c.state == "sent", period.holds(outbox.c.sent_at)
        )
    ).scalar_one()
    return {
        "email": {
            "sent": int(sent),
            "clicks": counted[EMAIL_CLICK],
            "ctr": rate(counted[EMAIL_CLICK], int(sent)),
        },
        "ads": {
            "impressions": counted[AD_IMPRESSION],
            "clicks": counted[AD_CLICK],
            "ctr": rate(counted[AD_CLICK], counted[AD_IMPRESSION]),
        },
    }


def _spend(connection: Connection, period: _Period, totals: dict[str, Any]) -> dict[str, Any]:
    first_day, end_day = period.days()
    day = ad_spend.c.date
    where = [day < end_day] if first_day is None else [day >= first_day, day < end_day]
    query = (
        sa.select(ad_spend.c.channel, sa.func.sum(ad_spend.c.cost), sa.func.count())
        .where(*where)
        .group_by(ad_spend.c.channel)
        .order_by(ad_spend.c.channel)
    )
    channels = [
        {"channel": channel, "cost": money(cost), "rows": int(rows)}
        for channel, cost, rows in connection.execute(query)
    ]
    cost = sum((row["cost"] for row in channels), money(0))
    rows = sum(row["rows"] for row in channels)
    return {
        "first_day": first_day,
        "last_day": end_day - timedelta(days=1),
        "rows": rows,
        "cost": cost,
        "channels": channels,
        "new_buyers": totals["new_buyers"],
        # No spend ingested for the period is "unknown", not free customers.
        "cac": money_ratio(cost, totals["new_buyers"]) if rows else None,
        "revenue": totals["gmv"],
        "roas": round(float(totals["gmv"] / cost), 4) if cost else None,
    }


# ---------------------------------------------------------------- numbers


def money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(CENT, rounding=ROUND_HALF_UP)


def money_ratio(total: Decimal, count: int) -> Decimal | None:
    return (total / count).quantize(CENT, rounding=ROUND_HALF_UP) if count else None


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
