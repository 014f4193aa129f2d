"""The one module that imports APScheduler (3.x): cron expressions and their fire times.

APScheduler computes when a cron expression fires in the shop's time zone; the
database decides who runs a slot (a unique (rule, slot) run row), so any number of
daemons, restarts and catch-ups run each slot once. docs/daemon.md says why the
daemon does not hand rules to an APScheduler job store instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger


def cron_trigger(expression: str, timezone: ZoneInfo) -> CronTrigger:
    """A 5-field crontab expression read in `timezone` (DST as the daemon will fire it)."""
    return CronTrigger.from_crontab(expression, timezone=timezone)


# Every loop over fire times is capped: a trigger that stops advancing (APScheduler
# returned the repeated autumn 02:30 forever, hanging every tick) must end the loop,
# not the daemon. A minutely cron over a day is 1,440 fires; this is far above that.
MAX_FIRE_STEPS = 10_000
# Longest DST fold of any zone is 1h (Lord Howe's is 30 min); looking back this far
# before a window finds the first occurrence of a repeated wall-clock time.
FOLD_LOOKBACK = timedelta(hours=3)
_TICK = timedelta(microseconds=1)


def fire_times(
    expression: str, timezone: ZoneInfo, after: datetime, until: datetime | None = None
) -> Iterator[datetime]:
    """Fire instants strictly after `after` (and up to `until`), strictly increasing.

    A cron expression names wall-clock times of the shop, and each wall-clock time
    fires once, on DST days too:
    - a time the spring change skips fires once, when the clocks resume (APScheduler's
      choice: the skipped 02:30 fires at 03:30); several times in one skipped hour
      collapse into that one fire;
    - a time the autumn change repeats fires once, at its first occurrence: a daily
      "30 2 * * *" is one slot, not two, and an hourly rule fires 24 times that day
      (the repeated hour once). APScheduler returns the repeated time sometimes, and
      then again forever; here it is skipped and the loop always moves on.
    Instants are returned in `timezone`, normalised through UTC so that a slot's name
    is a time that exists.
    """
    trigger = cron_trigger(expression, timezone)
    start = after.astimezone(UTC)
    # Walk from before the window, so that the first occurrence of a repeated wall
    # time is seen even when only its repetition falls inside the window.
    cursor = start - FOLD_LOOKBACK
    last_wall = None
    for _ in range(MAX_FIRE_STEPS):
        fire = trigger.get_next_fire_time(None, cursor + _TICK)
        if fire is None:
            return
        instant = fire.astimezone(UTC)
        if instant <= cursor:  # a trigger that does not advance: step past it ourselves
            cursor += timedelta(seconds=59)  # fires are whole minutes: none is skipped
            continue
        cursor = instant
        if until is not None and instant > until:
            return
        local = instant.astimezone(timezone)
        wall = local.replace(tzinfo=None, fold=0)
        # In a fold the wall clock goes back: every time up to the latest one already
        # fired is a repetition ("0,30 2 * * *" fires 02:00 and 02:30 once each).
        repeated = last_wall is not None and wall <= last_wall
        last_wall = wall if last_wall is None else max(last_wall, wall)
        if not repeated and instant > start:
            yield local
