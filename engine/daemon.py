"""`nudge run`: the daemon. Every tick evaluates every rule at now; a dispatcher drains.

Schedule rules need no job of their own: a tick plans a schedule rule only when one
of its cron slots fell in the last hour, and the (rule, slot) run claim makes that
happen once however many ticks or daemons see the slot. Rule files are reloaded on
every tick; a file that became invalid is reported and its last good version keeps
running (DESIGN invariant 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from engine import clock
from engine.config import Settings, load_settings
from engine.planning.compile import CompiledRule, RuleSet, load_ruleset
from engine.planning.runner import Evaluation, evaluate
from engine.store import Store, open_store

TICK_SECONDS = 60.0
DISPATCH_SECONDS = 5.0


@dataclass
class RuleCache:
    """The rules as last loaded, with the last good version of each broken one."""

    last_good: dict[str, CompiledRule] = field(default_factory=dict)

    def refresh(self, settings: Settings) -> RuleSet:
        ruleset = load_ruleset(settings)
        for rule_id in ruleset.broken:
            if rule_id in self.last_good and rule_id not in ruleset.rules:
                ruleset.rules[rule_id] = self.last_good[rule_id]
                ruleset.kept_last_good.add(rule_id)
        deleted = set(self.last_good) - set(ruleset.rules) - ruleset.broken
        for rule_id in deleted:
            self.last_good.pop(rule_id)
        self.last_good.update(ruleset.rules)
        return ruleset


def tick(store: Store, cache: RuleCache, now: datetime) -> Evaluation:
    """One evaluation of every rule at `now` (what the daemon does every minute)."""
    return evaluate(store, cache.refresh(store.settings), at=now, mode="run")


@dataclass
class Daemon:
    store: Store
    cache: RuleCache = field(default_factory=RuleCache)
    on_tick: Callable[[Evaluation], None] | None = None
    on_dispatch: Callable[[object], None] | None = None


# Open daemons by project folder: the scheduler's jobs are dotted paths with plain
# arguments, so they find their state here.
_DAEMONS: dict[str, Daemon] = {}


def tick_job(project: str) -> None:
    daemon = _DAEMONS[project]
    evaluation = tick(daemon.store, daemon.cache, clock.utcnow())
    if daemon.on_tick is not None:
        daemon.on_tick(evaluation)


def dispatch_job(project: str) -> None:
    from engine.delivery.runner import run_dispatcher

    daemon = _DAEMONS[project]
    report = run_dispatcher(daemon.store, once=True)
    if daemon.on_dispatch is not None and report.claimed:
        daemon.on_dispatch(report)


def run_daemon(
    project_dir: Path | None = None,
    *,
    once: bool = False,
    dispatch: bool = True,
    tick_seconds: float = TICK_SECONDS,
    dispatch_seconds: float = DISPATCH_SECONDS,
    on_tick: Callable[[Evaluation], None] | None = None,
    on_dispatch: Callable[[object], None] | None = None,
) -> None:
    """Tick and dispatch forever (until interrupted), or once with `once=True`."""
    settings = load_settings(project_dir)
    store = open_store(settings)
    key = str(settings.project_dir)
    _DAEMONS[key] = Daemon(store=store, on_tick=on_tick, on_dispatch=on_dispatch)
    try:
        if once:
            tick_job(key)
            if dispatch:
                dispatch_job(key)
            return
        from engine.scheduling import build_scheduler

        jobs = [("nudge-tick", "engine.daemon:tick_job", tick_seconds, (key,))]
        if dispatch:
            jobs.append(("nudge-dispatch", "engine.daemon:dispatch_job", dispatch_seconds, (key,)))
        scheduler = build_scheduler(jobs)
        tick_job(key)  # start with a tick rather than waiting a whole interval
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            scheduler.shutdown(wait=True)
    finally:
        _DAEMONS.pop(key, None)
        store.dispose()
