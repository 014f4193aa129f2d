"""`schedule: "0 10 * * MON"` — a sweep over everyone who matches, at cron times.

Cron is read in the shop's time zone (APScheduler's CronTrigger, through
engine.scheduling; each wall-clock time fires once, DST days included). The slot is
both the run slot (two daemons plan it once) and the occurrence key (a user is swept
once per slot).

At T the due slot is the latest fire time after the rule's last claimed slot, so a
daemon that was down, or ticks rarely, still runs it: once, coalesced, never a burst
of the slots it slept through, and only while the slot is younger than
`[daemon] misfire_grace` (default 6h: a breakfast email at dinner time helps nobody).
Slots older than that are recorded as one `missed` run, shown by `nudge status`. A
rule never evaluated before looks back FIRST_LOOK_BACK (a minute) only: adding a rule
does not fire a slot from this morning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.durations import parse_duration
from engine.scheduling import fire_times
from engine.store.people import User
from engine.store.planning import Run
from engine.triggers.base import TriggerContext, TriggerSpec, no_event

users = User.__table__
runs = Run.__table__
name = "schedule"
# A rule never evaluated before runs a slot of the last minute (the daemon wakes at
# the slot; cron users run `nudge fire` at it), nothing older.
FIRST_LOOK_BACK = timedelta(minutes=1)
# Claimed slots are read from the latest runs; a few suffice (one-user evaluations
# and other modes share the table).
_RECENT_RUNS = 5


def next_fire_times(expression: str, timezone: ZoneInfo, after: datetime, count: int = 3):
    """The next `count` fire times strictly after `after` (for `nudge check`)."""
    return list(islice(fire_times(expression, timezone, after), count))


@dataclass(frozen=True)
class SlotPlan:
    """What a schedule rule has to do at T."""

    due: datetime | None  # the slot to run now, if any
    coalesced: int = 0  # younger slots folded into `due` (the daemon slept through them)
    missed: int = 0  # slots older than misfire_grace, not run (capped at MAX_COUNTED)
    missed_through: datetime | None = None  # the instant up to which slots were missed


MAX_COUNTED = 10_000


def plan_slots(
    expression: str,
    timezone: ZoneInfo,
    at: datetime,
    *,
    last_slot: datetime | None,
    grace: timedelta,
) -> SlotPlan:
    """The due slot at `at`, given the last slot already claimed (see module doc)."""
    since = last_slot if last_slot is not None else at - FIRST_LOOK_BACK
    through = at - grace
    missed, last_missed = 0, None
    if since < through:
        for fire in islice(fire_times(expression, timezone, since, through), MAX_COUNTED):
            missed, last_missed = missed + 1, fire
    recent = list(fire_times(expression, timezone, max(since, through), until=at))
    return SlotPlan(
        due=recent[-1] if recent else None,
        coalesced=max(len(recent) - 1, 0),
        missed=missed,
        # The last missed slot names the record: daemons catching up at different
        # instants record the same missed run once.
        missed_through=last_missed,
    )


def due_slot(expression: str, timezone: ZoneInfo, at: datetime) -> datetime | None:
    """The latest fire time in (at - 1h, at]: what a tick at `at` runs when it
    claimed the slots before (its last one at least an hour old)."""
    hour = timedelta(hours=1)
    return plan_slots(expression, timezone, at, last_slot=at - hour, grace=hour).due


def last_claimed_slot(connection, rule_id: str) -> datetime | None:
    """The newest slot this rule claimed (run or missed), from its latest runs."""
    rows = connection.execute(
        sa.select(runs.c.slot)
        .where(runs.c.rule_id == rule_id, runs.c.status.in_(("done", "missed", "running")))
        .order_by(runs.c.at.desc())
        .limit(_RECENT_RUNS)
    ).scalars()
    slots = [_parse_slot(slot) for slot in rows]
    known = [slot for slot in slots if slot is not None]
    return max(known) if known else None


def _parse_slot(slot: str) -> datetime | None:
    text = slot.removeprefix(MISSED_PREFIX)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None  # a one-user evaluation's slot, or another kind's
    return parsed if parsed.tzinfo is not None else None


MISSED_PREFIX = "missed:"


def slot_plan(spec: TriggerSpec, ctx: TriggerContext) -> SlotPlan:
    """The plan at T for this rule (memoised on the context: asked several times)."""
    cached = ctx.memo.get("slot_plan")
    if cached is None:
        last = last_claimed_slot(ctx.connection, ctx.rule_id) if ctx.rule_id else None
        grace = parse_duration(ctx.settings.daemon.misfire_grace)
        cached = plan_slots(spec.value, ctx.settings.tz, ctx.at, last_slot=last, grace=grace)
        ctx.memo["slot_plan"] = cached
    return cached


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | None:
    fire = slot_plan(spec, ctx).due
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
    fire = slot_plan(spec, ctx).due
    return _iso(fire) if fire is not None else "none"


def missed(spec: TriggerSpec, ctx: TriggerContext) -> tuple[str, dict] | None:
    """(slot, counts) of a `missed` run to record at T, or None."""
    plan = slot_plan(spec, ctx)
    if not plan.missed or plan.missed_through is None:
        return None
    counts = {"missed": plan.missed, "through": _iso(plan.missed_through)}
    return f"{MISSED_PREFIX}{_iso(plan.missed_through)}", counts


def _iso(fire: datetime) -> str:
    return fire.isoformat(timespec="seconds")
