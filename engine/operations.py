"""What an operator needs to see about the daemons and the rules (`nudge status`).

- live daemons: id, host, pid, started, last heartbeat (a daemon that stopped beating
  for STALE_TICKS ticks is shown as gone: crashed or killed);
- per rule: its trigger, the next fire time of a schedule, and its last recorded
  run with the counts and the error;
- missed schedule slots (older than `[daemon] misfire_grace` when a daemon came back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from engine.store import Store
from engine.store import daemons as daemon_rows
from engine.store.planning import Run

runs = Run.__table__
STALE_TICKS = 3
# How far back stopped daemons and missed slots are listed.
RECENT = timedelta(days=7)


@dataclass
class Operations:
    daemons: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"daemons": self.daemons, "rules": self.rules, "missed": self.missed}


def operations(store: Store, ruleset, *, now: datetime) -> Operations:
    """Daemons, rules and missed slots as of `now`."""
    from engine.triggers.schedule import next_fire_times

    settings = store.settings
    report = Operations()
    with store.read() as connection:
        for row in daemon_rows.recent(connection, since=now - RECENT):
            # Three of its own ticks, plus a minute for a long evaluation.
            stale_after = timedelta(seconds=STALE_TICKS * row["tick_seconds"] + 60)
            alive = row["stopped_at"] is None and row["heartbeat_at"] >= now - stale_after
            state = "running" if alive else ("stopped" if row["stopped_at"] else "gone")
            report.daemons.append({**row, "state": state})
        latest = _latest_runs(connection)
        report.missed = [
            {"rule": rule_id, "at": at, **counts}
            for rule_id, at, counts in connection.execute(
                sa.select(runs.c.rule_id, runs.c.at, runs.c.counts)
                .where(runs.c.status == "missed", runs.c.at >= now - RECENT)
                .order_by(runs.c.at.desc())
            )
        ]
    for rule_id, compiled in sorted(ruleset.rules.items()):
        trigger = compiled.spec.trigger
        next_fire = None
        if trigger.kind == "schedule":
            upcoming = next_fire_times(trigger.value, settings.tz, now, 1)
            next_fire = upcoming[0] if upcoming else None
        last = latest.get(rule_id)
        report.rules.append(
            {
                "rule": rule_id,
                "status": compiled.spec.status,
                "trigger": f"{trigger.kind}: {trigger.value}",
                "next_fire": next_fire,
                "last_run": last,
            }
        )
    return report


def _latest_runs(connection) -> dict[str, dict[str, Any]]:
    """The latest recorded (non-missed) run of each rule, in one query."""
    latest = (
        sa.select(runs.c.rule_id, sa.func.max(runs.c.at).label("at"))
        .where(runs.c.status != "missed")
        .group_by(runs.c.rule_id)
        .subquery()
    )
    rows = connection.execute(
        sa.select(runs.c.rule_id, runs.c.at, runs.c.status, runs.c.counts, runs.c.error)
        .join(latest, sa.and_(latest.c.rule_id == runs.c.rule_id, latest.c.at == runs.c.at))
        .where(runs.c.status != "missed")
    )
    result: dict[str, dict[str, Any]] = {}
    for rule_id, at, status, counts, error in rows:
        result[rule_id] = {
            "at": at,
            "status": status,
            "planned": counts.get("planned", 0),
            "held_out": counts.get("held_out", 0),
            "suppressed": sum((counts.get("suppressed") or {}).values()),
            "error": error,
        }
    return result
