"""The one module that imports APScheduler (3.x): cron triggers and the daemon's scheduler."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger


def cron_trigger(expression: str, timezone: ZoneInfo) -> CronTrigger:
    """A 5-field crontab expression read in `timezone` (DST as the daemon will fire it)."""
    return CronTrigger.from_crontab(expression, timezone=timezone)


def build_scheduler(jobs: list[tuple[str, str, float, tuple]]) -> BlockingScheduler:
    """A blocking scheduler running each (id, dotted function path, every seconds, args).

    Jobs are referenced by dotted path with stable ids, so a persistent job store could
    hold them; coalesce + max_instances=1 means a slow tick is never run twice at once
    and missed ticks collapse into one.
    """
    scheduler = BlockingScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    )
    for job_id, function, seconds, args in jobs:
        scheduler.add_job(
            function, IntervalTrigger(seconds=seconds), id=job_id, args=args, replace_existing=True
        )
    return scheduler
