"""`nudge run`: the daemon. It evaluates every rule when there is something to do and
delivers the outbox continuously, until SIGTERM or SIGINT.

When it evaluates (docs/daemon.md):
- at once when new data is committed (ingest sends NOTIFY on PostgreSQL; on SQLite a
  one-row change counter is read every `[daemon] poll_seconds`), so a purchase is
  planned within seconds, not at the next minute;
- at the next fire time of a schedule rule (APScheduler computes fire times in
  engine/scheduling.py; the (rule, slot) run claim makes each slot run once however
  many daemons see it);
- otherwise every `[daemon] tick_seconds`, for what time alone changes (stages that
  lapse, follow-ups whose wait ends).

The dispatcher runs in a thread beside the ticks. Rule files are reloaded on every
tick; a file that became invalid is reported and its last good version keeps running
(DESIGN invariant 6). On SIGTERM/SIGINT the current tick finishes (each rule is its
own transaction), the dispatcher releases what it has not sent, the daemon signs off
and the process exits 0.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from engine import clock
from engine.config import Settings, load_settings
from engine.daemon_log import DaemonLog
from engine.durations import parse_duration
from engine.errors import ConfigError
from engine.planning.compile import CompiledRule, RuleSet, load_ruleset
from engine.planning.runner import Evaluation, evaluate
from engine.store import Store, open_store

# Housekeeping (pruning old runs and daemons) at most this often.
HOUSEKEEPING_EVERY = timedelta(hours=1)
# Steady ticks read only the events ingested (and follow-ups due) since the previous
# tick, less this lag: an event's ingested_at is its import's start, so an import that
# commits its last batch up to this long after it began is still seen at once...
CHANGE_LAG = timedelta(minutes=15)
# ...and the whole look-back window is swept this often (and at start), so anything a
# longer import committed is planned at most this late, never lost.
FULL_SWEEP_EVERY = timedelta(hours=1)


@dataclass
class RuleCache:
    """The rules as last loaded, with the last good version of each broken one."""

    last_good: dict[str, CompiledRule] = field(default_factory=dict)
    current: RuleSet | None = None
    # What the files looked like when `current` was loaded: an idle tick stats the
    # folder instead of parsing every YAML file again.
    fingerprint: tuple | None = None

    def refresh(self, settings: Settings) -> RuleSet:
        fingerprint = _folder_fingerprint(settings.rules_dir)
        if self.current is not None and fingerprint is not None and fingerprint == self.fingerprint:
            return self.current
        ruleset = load_ruleset(settings)
        self.fingerprint = fingerprint  # only once loaded: a failed load is retried
        for rule_id in ruleset.broken:
            if rule_id in self.last_good and rule_id not in ruleset.rules:
                ruleset.rules[rule_id] = self.last_good[rule_id]
                ruleset.kept_last_good.add(rule_id)
        deleted = set(self.last_good) - set(ruleset.rules) - ruleset.broken
        for rule_id in deleted:
            self.last_good.pop(rule_id)
        self.last_good.update(ruleset.rules)
        self.current = ruleset
        return ruleset

    def rules(self) -> RuleSet:
        """The rules of the latest tick (the dispatcher's RulePolicy reads these)."""
        return self.current if self.current is not None else RuleSet()


def _folder_fingerprint(folder: Path) -> tuple | None:
    """What the loader reads (rule files and segments), as (path, inode, mtime, ctime,
    size): a chmod or a same-size edit changes ctime. None when a file vanished or
    could not be read meanwhile: then the rules are simply reloaded."""
    from engine.rules.loader import rule_files
    from engine.rules.segments import SEGMENT_FILES

    try:
        paths = [*rule_files(folder), *(folder / name for name in SEGMENT_FILES)]
        entries = []
        for path in sorted(paths):
            if path.exists():
                stat = path.stat()
                entries.append(
                    (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
                )
        return tuple(entries)
    except OSError:
        return None


def tick(
    store: Store, cache: RuleCache, now: datetime, changed_since: datetime | None = None
) -> Evaluation:
    """One evaluation of every rule at `now` (event and after triggers narrowed to what
    changed since `changed_since`, when given)."""
    ruleset = cache.refresh(store.settings)
    return evaluate(store, ruleset, at=now, mode="run", changed_since=changed_since)


def seconds_until_next_slot(ruleset: RuleSet, settings: Settings, now: datetime) -> float | None:
    """Seconds until the next fire time of any schedule rule (None without any)."""
    from engine.triggers.schedule import next_fire_times

    upcoming = [
        fire
        for compiled in ruleset.rules.values()
        if compiled.spec.trigger.kind == "schedule" and compiled.spec.status != "paused"
        for fire in next_fire_times(compiled.spec.trigger.value, settings.tz, now, 1)
    ]
    if not upcoming:
        return None
    return max((min(upcoming) - now).total_seconds(), 0.0)


def validate_tick_seconds(value: float) -> float:
    if not 1 <= value <= 3600:
        raise ConfigError(
            f"--tick-seconds must be between 1 and 3600, not {value:g}: new data wakes the "
            "daemon at once anyway, and schedules catch up after a long wait"
        )
    return value


def run_daemon(
    project_dir: Path | None = None,
    *,
    once: bool = False,
    dispatch: bool = True,
    tick_seconds: float | None = None,
    log: DaemonLog | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Tick and dispatch until `stop` is set (or SIGTERM/SIGINT), or once with `once`."""
    from engine.delivery.runner import stop_on_signals
    from engine.store.daemon_lock import exclusive_daemon

    settings = load_settings(project_dir)
    tick_seconds = validate_tick_seconds(tick_seconds or settings.daemon.tick_seconds)
    log = log or DaemonLog()
    store = open_store(settings)
    signals: contextlib.AbstractContextManager = contextlib.nullcontext()
    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signals = stop_on_signals(stop)
    try:
        with signals, exclusive_daemon(store, owner="nudge run --once" if once else "nudge run"):
            _Daemon(store, log, stop, tick_seconds).run(once=once, dispatch=dispatch)
    finally:
        store.dispose()


class _Daemon:
    def __init__(self, store: Store, log: DaemonLog, stop: threading.Event, tick_seconds: float):
        self.store = store
        self.log = log
        self.stop = stop
        self.tick_seconds = tick_seconds
        self.cache = RuleCache()
        self.daemon_id: str | None = None
        self.housekept_at: datetime | None = None
        self.swept_at: datetime | None = None
        self.ticked_at: datetime | None = None

    def run(self, *, once: bool, dispatch: bool) -> None:
        from engine.store import daemons

        with self.store.begin() as connection:
            self.daemon_id = daemons.register(
                connection, clock.utcnow(), tick_seconds=self.tick_seconds
            )
        self.log.emit("start", f"daemon {self.daemon_id} started", daemon=self.daemon_id)
        try:
            if once:
                self._tick("once")
                if dispatch:
                    self._dispatch_once()
                return
            self._loop(dispatch)
        finally:
            with self.store.begin() as connection:
                daemons.sign_off(connection, self.daemon_id, clock.utcnow())
            self.log.emit("stop", f"daemon {self.daemon_id} stopped", daemon=self.daemon_id)

    def _loop(self, dispatch: bool) -> None:
        from engine.store.changes import ChangeWatcher

        settings = self.store.settings
        watcher = ChangeWatcher(self.store, poll_seconds=settings.daemon.poll_seconds)
        dispatchers: list[threading.Thread] = []
        if dispatch:
            from engine.delivery.config import delivery_config

            count = delivery_config(settings).dispatchers
            dispatchers = [
                threading.Thread(
                    target=self._dispatch_forever,
                    args=(number if count > 1 else None,),
                    name=f"nudge-dispatch-{number}",
                )
                for number in range(1, count + 1)
            ]
        try:
            reason = "start"
            while not self.stop.is_set():
                try:
                    self._tick(reason)
                except Exception as exc:  # noqa: BLE001 - a database restart must not end the daemon
                    self.log.emit("error", f"tick failed: {exc!r}; retrying", error=repr(exc))
                for dispatcher in dispatchers:
                    if dispatcher.ident is None:
                        dispatcher.start()  # after the first tick: rules are loaded
                wait = self.tick_seconds
                until_slot = seconds_until_next_slot(self.cache.rules(), settings, clock.utcnow())
                if until_slot is not None and until_slot < wait:
                    wait, reason = until_slot + 0.05, "schedule"
                else:
                    reason = "timer"
                if self._wait(watcher, wait):
                    reason = "new data"
        finally:
            # However the loop ends, the dispatcher thread must end with it.
            self.stop.set()
            watcher.close()
            for dispatcher in dispatchers:
                if dispatcher.is_alive():
                    dispatcher.join()

    def _wait(self, watcher, seconds: float) -> bool:
        """Wait for new data; a lost database connection degrades to a plain timer."""
        try:
            return watcher.wait(seconds, self.stop)
        except Exception as exc:  # noqa: BLE001 - the database may be restarting
            self.log.emit("error", f"change watch failed: {exc!r}; retrying", error=repr(exc))
            watcher.reset()
            self.stop.wait(min(seconds, self.store.settings.daemon.poll_seconds * 5))
            return False

    def _tick(self, reason: str) -> None:
        from engine.store import daemons

        now = clock.utcnow()
        changed_since = None
        sweeping = self.swept_at is None or now - self.swept_at >= FULL_SWEEP_EVERY
        if not sweeping and self.ticked_at is not None:
            changed_since = self.ticked_at - CHANGE_LAG
        evaluation = tick(self.store, self.cache, now, changed_since)
        # Only a tick that completed moves the marks: a failed one is done again whole.
        if changed_since is None:
            self.swept_at = now
        self.ticked_at = now
        self.log.tick(evaluation, reason=reason)
        with self.store.begin() as connection:
            daemons.heartbeat(connection, self.daemon_id, now)
        self._housekeeping(now)

    def _housekeeping(self, now: datetime) -> None:
        from engine.planning.pipeline import prune_runs
        from engine.store import daemons

        if self.housekept_at is not None and now - self.housekept_at < HOUSEKEEPING_EVERY:
            return
        keep = parse_duration(self.store.settings.daemon.keep_runs)
        with self.store.begin() as connection:
            pruned = prune_runs(connection, before=now - keep)
            daemons.prune(connection, before=now - keep)
        self.housekept_at = now
        if pruned:
            self.log.emit("prune", f"pruned {pruned} old runs that decided nothing", runs=pruned)

    def _dispatch_once(self) -> None:
        from engine.delivery.runner import run_dispatchers

        report = run_dispatchers(self.store, once=True, stop=self.stop, rules=self.cache.rules)
        self.log.dispatch(report)

    def _dispatch_forever(self, number: int | None = None) -> None:
        """One dispatcher (`number` of `[delivery] dispatchers`, None when there is one),
        restarted after a failure until the daemon stops."""
        from engine.delivery.runner import run_dispatcher, worker_name

        poll = self.store.settings.daemon.poll_seconds
        worker = worker_name(number)
        while not self.stop.is_set():
            try:
                run_dispatcher(
                    self.store,
                    once=False,
                    stop=self.stop,
                    poll_seconds=poll,
                    on_pass=self.log.dispatch,
                    rules=self.cache.rules,
                    worker_id=worker,
                )
            except Exception as exc:  # noqa: BLE001 - delivery must outlive a lost connection
                self.log.emit("error", f"dispatch failed: {exc!r}; retrying", error=repr(exc))
                self.stop.wait(poll)
