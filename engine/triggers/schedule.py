"""`schedule: "0 10 * * MON"` — a sweep over everyone who matches, at cron times.

Cron is read in the shop's time zone (APScheduler's CronTrigger, through
engine.scheduling), so DST is handled the way the daemon fires it. At T the due slot
is the latest fire time in (T - GRACE, T]; with none, nothing is due. The slot is
both the run slot (two daemons plan it once) and the occurrence key (a user is
swept once per slot).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.scheduling import fire_times
from engine.store.people import User
from engine.triggers.base import TriggerContext, TriggerSpec, no_event

users = User.__table__
name = "schedule"
GRACE = timedelta(hours=1)


def next_fire_times(expression: str, timezone: ZoneInfo, after: datetime, count: int = 3):
    """The next `count` fire times strictly after `after` (for `nudge check`)."""
    return list(islice(fire_times(expression, timezone, after), count))


def due_slot(expression: str, timezone: ZoneInfo, at: datetime) -> datetime | None:
    """The latest fire time in (at - GRACE, at], or None."""
    latest = None
    for fire in fire_times(expression, timezone, at - GRACE, until=at):
        latest = fire
    return latest


def _slot_time(spec: TriggerSpec, ctx: TriggerContext) -> datetime | None:
    return due_slot(spec.value, ctx.settings.tz, ctx.at)


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | None:
    fire = _slot_time(spec, ctx)
    if fire is None:
        return None
    return sa.select(
        users.c.id.label("user_id"),
        sa.literal(f"schedule:{_iso(fire)}", sa.String).label("occurrence_key"),
        sa.literal(fire, users.c.member_since.type).label("occurred_at"),
        sa.literal(fire, users.c.member_since.type).label("trigger_at"),
        no_event(),
        sa.literal(f"schedule:{_iso(fire)}", sa.String).label("occurrence_ref"),
    )


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    fire = _slot_time(spec, ctx)
    return _iso(fire) if fire is not None else "none"


def _iso(fire: datetime) -> str:
    return fire.isoformat(timespec="seconds")
