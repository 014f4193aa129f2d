"""Latency benchmark: ingest commit -> planned -> delivered under a running `nudge run`.

For each backend (a fresh SQLite file, and a fresh PostgreSQL database created on
NUDGE_BENCH_POSTGRES_URL and dropped afterwards) it builds a shop of U users
(deterministic; default 10,000, with ~3 past visits/purchases each) running the 6
shipped rules plus `bench-purchase` (on every purchase: an email from the thank-you
creative and a webhook), through the file backends. The initial sweep's backlog is
planned in-process and marked sent, so the daemon starts from a steady state. Then:

1. a real `nudge run --log-format json` subprocess (default daemon settings: 60 s
   tick, 1 s poll) runs while purchases are ingested one by one through
   `engine.ingest.ingest_files` at a steady rate (default 5/s for 30 s). For each
   purchase it reports, from the instant its ingest committed:
   - planned: the outbox row's `created_at` (the instant of the evaluation that planned
     it) and the end of that evaluation (the `ts` of the daemon's tick log line, after
     every rule committed);
   - delivered: the latest `sent_at` of its two actions.
   Targets: ingest -> planned p95 <= 5 s, -> delivered p95 <= 10 s. It checks that every
   purchase was planned and both its actions were sent, that the daemon logged no
   error and exits 0 on SIGTERM, and counts what woke the evaluation that planned each
   purchase (`new data`, or the `timer` tick when the wake-up evaluation skipped it).
2. the steady idle tick, with the daemon stopped: what `engine.daemon.tick` runs when
   nothing is new (the rule reload, `RuleCache.refresh`, then `evaluate(...,
   changed_since=previous - CHANGE_LAG)`), timed in its two parts `--ticks` times after
   a full sweep, each checked to have done nothing but what time alone made due (as
   with `--bulk` below; the stage entries and decisions of each tick are printed, zeros
   at this size) and the open stages after the last to equal a full recomputation; beside
   it the hand-written limit: as many plain indexed `SELECT 1 ... LIMIT 1` round trips
   as the tick issued statements, and the ratio. Target: <= 50 ms at 10,000 users.

`--bulk` measures the idle tick alone on a large shop (target: <= 1 s at 1,000,000
users): bench/evaluate.py's deterministic shop loaded by its bulk paths (executemany /
COPY; ~3 events per user by default), its profiles and stages refreshed as of its T
(2026-11-11 12:00 UTC). The daemon's start (a full sweep) runs at T + 20 min, past
CHANGE_LAG after the load (`--start-days` later still: the shop's dates begin to cross
stage thresholds about a day after T); then `--ticks` steady ticks follow in simulated
time, `--step` seconds apart (default 60, the daemon's timer). Nothing is ingested, but
time alone moves some users of a large shop across a stage threshold every minute and
brings follow-ups due, so a tick may record those stage changes and plan for them, and
nothing else: each tick is checked to have decided nothing for an event rule, and for
a stage rule only for users it saw enter that stage; after the last tick the recorded
open stages must equal a full recomputation (nothing missed). `--profile` runs as many
ticks again under cProfile, after the timed ones, and prints where their time goes and
the slowest statements.

Load averages are printed with the figures (bench/README.md has them).

    .venv/bin/python bench/latency.py                                  # 5/s for 30 s, both
    .venv/bin/python bench/latency.py --rate 10 --seconds 60 --backend postgresql --json
    .venv/bin/python bench/latency.py --bulk --users 1000000 --start-days 2 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine.clock import utcnow  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.daemon import CHANGE_LAG, RuleCache, tick  # noqa: E402
from engine.ingest import ingest_files  # noqa: E402
from engine.planning.compile import load_ruleset  # noqa: E402
from engine.planning.runner import evaluate  # noqa: E402
from engine.store import Store, open_store  # noqa: E402
from engine.store.database import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402
from engine.store.people import Event  # noqa: E402
from engine.store.planning import DaemonProcess, Decision, OutboxAction  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RULE_ID = "bench-purchase"
RULE = """\
description: Thank every purchase by email and tell the CRM (bench/latency.py).
trigger: {event: purchase}
actions:
  email: {creative: thank-you}
  webhook: {url: "https://crm.example.com/hooks/nudge", body: {source: bench}}
"""
NUDGE_TOML = """\
[shop]
name = "Latency Bench Shop"
timezone = "Asia/Shanghai"
currency = "CNY"

[database]
url = "{url}"

[rules]
templates = "{templates}"

[delivery.webhook]
backend = "file"
"""

outbox = OutboxAction.__table__
decisions = Decision.__table__
events = Event.__table__
daemons = DaemonProcess.__table__


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(pick(0.95), 3),
        "max": round(ordered[-1], 3),
    }


# -- the shop --------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows))
    return path


def seed(store: Store, folder: Path, users: int, now: datetime, random_seed: int = 7) -> dict:
    """U users with contact points and consent, and ~3 past events each (2-180 days ago)."""
    rng = random.Random(random_seed)
    tiers = (None, None, "silver", "gold", "platinum")
    people, history = [], []
    for i in range(users):
        user_id = f"u{i:06d}"
        people.append(
            {
                "id": user_id,
                "email": f"{user_id}@example.com",
                "locale": "en" if i % 3 else "zh-CN",
                "member_tier": tiers[i % len(tiers)],
                "email_opt_in": rng.random() < 0.8,
                "ads_opt_in": rng.random() < 0.5,
            }
        )
        for _ in range(rng.randrange(7)):
            at = now - timedelta(days=2 + rng.random() * 178)
            event = {"user": user_id, "type": "visit", "at": at.isoformat()}
            if rng.random() < 0.35:
                event |= {"type": "purchase", "amount": rng.randrange(20, 900)}
            history.append(event)
    started = time.perf_counter()
    for kind, rows in (("users", people), ("events", history)):
        path = write_jsonl(folder / f"seed-{kind}.jsonl", rows)
        report = ingest_files(store, [path], now=now, kind=kind)
        assert not report.rejected, report.rejected[:3]
    reachable = [p["id"] for p in people if p["email_opt_in"]]
    return {
        "users": users,
        "events": len(history),
        "seconds": time.perf_counter() - started,
        "reachable": reachable,
    }


def make_project(folder: Path, url: str) -> Path:
    project = folder / "shop"
    rules = project / "rules"
    rules.mkdir(parents=True)
    text = NUDGE_TOML.replace("{url}", url).replace("{templates}", str(ROOT / "templates"))
    (project / "nudge.toml").write_text(text)
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        shutil.copy(path, rules / path.name)
    (rules / f"{RULE_ID}.yaml").write_text(RULE)
    return project


def settle(store: Store) -> dict:
    """The initial sweep, in-process; its backlog is marked sent (a shop that was
    already running), so the daemon starts with nothing to catch up."""
    now = utcnow()
    ruleset = load_ruleset(store.settings)
    assert not ruleset.errors, [d.render() for d in ruleset.errors]
    started = time.perf_counter()
    evaluation = evaluate(store, ruleset, at=now)
    assert not evaluation.failed, [o.error for o in evaluation.outcomes if o.error]
    seconds = time.perf_counter() - started
    with store.begin() as connection:
        backlog = connection.execute(
            outbox.update()
            .where(outbox.c.state == "planned")
            .values(state="sent", sent_at=now, updated_at=now)
        ).rowcount
    return {
        "seconds": seconds,
        "planned": sum(o.planned for o in evaluation.outcomes),
        "backlog": backlog,
    }


# -- the daemon and the stream ---------------------------------------------------------


class Daemon:
    def __init__(self, project: Path, folder: Path):
        self.log = folder / "daemon.log"
        self.errors = folder / "daemon.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("NUDGE_DATABASE_URL", None)  # nudge.toml says which database
        with self.log.open("w") as out, self.errors.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from cli import app; app()", "run", "--log-format", "json"],
                cwd=project,
                env=env,
                stdout=out,
                stderr=err,
            )

    def lines(self) -> list[dict]:
        text = self.log.read_text() if self.log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(line["event"] == "start" for line in self.lines()):
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited: {self.errors.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError("the daemon did not stop within 30 s of SIGTERM") from None


def stream(
    store: Store, folder: Path, reachable: list[str], rate: float, seconds: float
) -> dict[str, datetime]:
    """One purchase per ingest, every 1/rate s, each by a user the rule can reach (email
    consent: a rule with an email is suppressed, `no_consent`, for the others); returns
    event_id -> the instant its ingest committed."""
    rng = random.Random(11)
    committed: dict[str, datetime] = {}
    count = int(rate * seconds)
    started = time.monotonic()
    for number in range(count):
        due = started + number / rate
        time.sleep(max(0.0, due - time.monotonic()))
        event_id = f"bench-{number:06d}"
        row = {
            "event_id": event_id,
            "user": rng.choice(reachable),
            "type": "purchase",
            "at": utcnow().isoformat(),
            "amount": rng.randrange(20, 900),
        }
        path = write_jsonl(folder / f"stream-{number:06d}.jsonl", [row])
        report = ingest_files(store, [path], now=utcnow(), kind="events")
        committed[event_id] = utcnow()  # ingest_files returns once its transaction committed
        assert report.events_inserted == 1 and not report.rejected, report
    return committed


def outcomes(store: Store, event_ids: list[str]) -> dict[str, list[tuple]]:
    """event_id -> [(kind, state, created_at, sent_at)] of the bench rule's actions."""
    query = (
        sa.select(
            events.c.source_id,
            outbox.c.kind,
            outbox.c.state,
            outbox.c.created_at,
            outbox.c.sent_at,
        )
        .select_from(
            events.join(decisions, decisions.c.event_id == events.c.id).join(
                outbox, outbox.c.decision_id == decisions.c.id
            )
        )
        .where(decisions.c.rule_id == RULE_ID, events.c.source_id.in_(event_ids))
    )
    found: dict[str, list[tuple]] = {event_id: [] for event_id in event_ids}
    with store.connect() as connection:
        for source_id, *rest in connection.execute(query):
            found[source_id].append(tuple(rest))
    return found


def all_delivered(found: dict[str, list[tuple]]) -> bool:
    return all(
        sorted(kind for kind, *_ in rows) == ["email", "webhook"]
        and {state for _, state, *_ in rows} == {"sent"}
        for rows in found.values()
    )


def first_tick_done(store: Store) -> bool:
    """The daemon's heartbeat moves past its start once its first tick (a full sweep)
    is done; an idle tick prints nothing."""
    with store.connect() as connection:
        row = connection.execute(sa.select(daemons.c.started_at, daemons.c.heartbeat_at)).first()
    return row is not None and row.heartbeat_at > row.started_at


def measure_latency(store, project, folder, reachable, rate, seconds) -> dict:
    daemon = Daemon(project, folder)
    try:
        daemon.wait_started()
        deadline = time.monotonic() + 60
        while not first_tick_done(store):
            assert time.monotonic() < deadline, "the daemon's first tick took over 60 s"
            time.sleep(0.1)
        load_before = load()
        started = time.monotonic()
        committed = stream(store, folder, reachable, rate, seconds)
        streamed = time.monotonic() - started
        deadline = time.monotonic() + 120
        while not all_delivered(found := outcomes(store, list(committed))):
            if time.monotonic() > deadline:
                missing = [e for e, rows in found.items() if len(rows) != 2]
                raise AssertionError(f"not planned and delivered within 120 s: {missing[:5]}")
            time.sleep(0.2)
        load_after = load()
    finally:
        code = daemon.stop()
    assert code == 0, f"the daemon exited {code}: {daemon.errors.read_text()}"
    lines = daemon.lines()
    errors = [line for line in lines if line["event"] == "error"]
    assert not errors, errors[:3]
    # The end of each evaluation: its tick line is printed after every rule committed.
    ticks = {datetime.fromisoformat(line["at"]): line for line in lines if line["event"] == "tick"}
    planned, planned_committed, delivered = [], [], []
    woken_by: Counter[str] = Counter()
    for event_id, rows in found.items():
        start = committed[event_id]
        created = min(created_at for _, _, created_at, _ in rows)
        planned.append((created - start).total_seconds())
        planned_committed.append(
            (datetime.fromisoformat(ticks[created]["ts"]) - start).total_seconds()
        )
        delivered.append((max(sent_at for *_, sent_at in rows) - start).total_seconds())
        woken_by[ticks[created]["reason"]] += 1
    return {
        "events": len(committed),
        "rate_per_s": round((len(committed) - 1) / streamed, 2),
        "planned_s": percentiles(planned),
        "planned_committed_s": percentiles(planned_committed),
        "delivered_s": percentiles(delivered),
        "planned_over_5s": sum(1 for value in planned if value > 5),
        # "new data" (the ingest's wake-up) for all of them, ideally; "timer" means an
        # event the wake-up evaluation did not plan (bench/README.md: the slot).
        "planned_by_tick": dict(woken_by),
        "load_before": load_before,
        "load_after": load_after,
    }


# -- the idle tick ---------------------------------------------------------------------


class StatementCounter:
    """Counts the statements run on `engine`, and (with `timed`) sums each statement
    shape's execution time (its first 90 characters)."""

    def __init__(self, engine, timed: bool = False):
        self.engine, self.timed, self.count = engine, timed, 0
        self.seconds: Counter[str] = Counter()
        self._started: list[float] = []

    def before(self, conn, cursor, statement, *args) -> None:
        self.count += 1
        if self.timed:
            self._started.append(time.perf_counter())

    def after(self, conn, cursor, statement, *args) -> None:
        if self.timed and self._started:
            shape = " ".join(statement.split())[:90]
            self.seconds[shape] += time.perf_counter() - self._started.pop()

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self.before)
        sa.event.listen(self.engine, "after_cursor_execute", self.after)
        return self

    def __exit__(self, *exc_info) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self.before)
        sa.event.remove(self.engine, "after_cursor_execute", self.after)


def check_idle(evaluation, ruleset) -> tuple[int, int]:
    """The tick did no work but what time alone made due (nothing was ingested):
    nothing failed, every rule ran, no event rule decided anything, and a stage rule
    decided only for users the tick's own refresh saw enter its stage (a date crossing
    a threshold). Follow-ups whose wait ended and schedule slots that came due are
    time's work too. Returns (stage entries, decisions): (0, 0) for a tick that had
    nothing at all to do."""
    assert not evaluation.failed, [o.error for o in evaluation.outcomes if o.error]
    assert len(evaluation.outcomes) == len(ruleset.rules) > 0
    entries = evaluation.stage_entries
    for outcome in evaluation.outcomes:
        trigger = ruleset.rules[outcome.rule_id].spec.trigger
        if trigger.kind in ("after", "schedule"):
            continue
        allowed = entries.get(trigger.value, 0) if trigger.kind == "stage" else 0
        assert outcome.matched <= allowed, (outcome.rule_id, outcome.as_dict(), entries)
    return sum(entries.values()), sum(o.matched for o in evaluation.outcomes)


def check_stages_complete(store: Store, at: datetime) -> int:
    """After the timed ticks: every user's open stage is what a full recomputation at
    `at` gives (the incremental refreshes missed no one). Returns the users compared."""
    from engine.lifecycle import stages_as_of
    from engine.store.people import StageMembership

    memberships = StageMembership.__table__
    with store.connect() as connection:
        computed = stages_as_of(connection, store.settings, at).subquery()
        open_rows = (
            sa.select(memberships.c.user_id, memberships.c.stage)
            .where(memberships.c.exited_at.is_(None))
            .subquery()
        )
        differ = sa.select(sa.func.count()).select_from(
            computed.outerjoin(open_rows, open_rows.c.user_id == computed.c.user_id)
        )
        differ = differ.where(
            computed.c.stage.is_not(None),
            sa.or_(open_rows.c.stage.is_(None), open_rows.c.stage != computed.c.stage),
        )
        assert connection.execute(differ).scalar() == 0, "an incremental refresh missed a change"
        return connection.execute(sa.select(sa.func.count()).select_from(computed)).scalar()


def measure_idle_tick(
    store: Store,
    repeats: int,
    *,
    start: datetime | None = None,
    step: timedelta | None = None,
    profile: bool = False,
) -> dict:
    """What `engine.daemon.tick` does when nothing is new, timed in its two parts: the
    rule reload (`RuleCache.refresh`: read and compile the rule files) and `evaluate`
    with `changed_since` (stage refresh, then each rule in its own transaction).

    Real time (`start` None: the ticks run back to back at the wall clock), or simulated
    time: the daemon's start at `start`, then a tick every `step`.

    Interleaved with each tick, the hand-written limit: as many plain indexed
    `SELECT 1 ... LIMIT 1` round trips, on one connection, as the tick issued
    statements (what a tick that has nothing to do cannot go below)."""
    cache = RuleCache()
    previous = start or utcnow()
    started = time.perf_counter()
    first = tick(store, cache, previous)  # the daemon's start: a full sweep
    sweep_seconds = time.perf_counter() - started
    assert not first.failed, [o.error for o in first.outcomes if o.error]
    totals, reloads, evaluations, statements, hand = [], [], [], [], []
    entered, decided = [], []
    per_rule: dict[str, list[int]] = {}
    statement_seconds: Counter[str] = Counter()
    profiler = cProfile.Profile() if profile else None
    load_before = load()
    probe = sa.text(
        "SELECT 1 FROM events WHERE type = :type AND ingested_at > :since LIMIT 1"
    ).bindparams(sa.bindparam("since", type_=events.c.ingested_at.type))
    # With `profile`, as many ticks again after the timed ones, under cProfile and
    # statement timing (their overhead stays out of the figures).
    for number in range(2 * repeats if profile else repeats):
        profiling = number >= repeats
        now = utcnow() if start is None else previous + step
        with StatementCounter(store.engine, timed=profiling) as counter:
            if profiling:
                profiler.enable()
            started = time.perf_counter()
            ruleset = cache.refresh(store.settings)
            reloaded = time.perf_counter()
            evaluation = evaluate(
                store, ruleset, at=now, mode="run", changed_since=previous - CHANGE_LAG
            )
            finished = time.perf_counter()
            if profiling:
                profiler.disable()
        previous = now
        entries, decisions = check_idle(evaluation, ruleset)
        entered.append(entries)
        decided.append(decisions)
        if profiling:
            statement_seconds.update(counter.seconds)
            continue
        totals.append(finished - started)
        reloads.append(reloaded - started)
        evaluations.append(finished - reloaded)
        statements.append(counter.count)
        for outcome in evaluation.outcomes:
            per_rule.setdefault(outcome.rule_id, []).append(outcome.duration_ms)
        with store.connect() as connection:
            started = time.perf_counter()
            for _ in range(counter.count):
                connection.execute(probe, {"type": "purchase", "since": previous}).first()
            hand.append(time.perf_counter() - started)
            connection.rollback()
        if start is None:
            time.sleep(0.05)
    load_after = load()
    checked = check_stages_complete(store, previous)

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 1)

    rules_ms = {rule: statistics.median(values) for rule, values in per_rule.items()}
    result = {
        "rules": len(per_rule),
        "repeats": repeats,
        "clock": "wall" if start is None else f"simulated, a tick every {step.total_seconds():g} s",
        "sweep_s": round(sweep_seconds, 2),
        "tick_ms": {
            "min": round(min(totals) * 1000, 1),
            "p50": ms(totals),
            "max": round(max(totals) * 1000, 1),
        },
        "reload_ms": ms(reloads),
        "evaluate_ms": ms(evaluations),
        "rules_ms": round(sum(rules_ms.values()), 1),
        "slowest_rules_ms": dict(sorted(rules_ms.items(), key=lambda kv: -kv[1])[:3]),
        "statements": max(statements),
        "hand_ms": {
            "min": round(min(hand) * 1000, 2),
            "p50": round(statistics.median(hand) * 1000, 2),
        },
        "ratio": round(statistics.median(totals) / statistics.median(hand), 1),
        # Stage entries each tick recorded (time alone: nothing was ingested), the
        # profiled ticks included.
        "stage_entries": entered,
        "decided": decided,
        "stages_checked": checked,
        "load": f"{load_before} -> {load_after}",
    }
    if profiler is not None:
        result["profile"] = profile_summary(profiler, statement_seconds, repeats)
    return result


def profile_summary(profiler: cProfile.Profile, statements: Counter[str], repeats: int) -> dict:
    """The functions with the most cumulative time, and the statement shapes with the
    most execution time, per tick (ms)."""
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if path.startswith(str(ROOT / "engine")):
            rows.append((cumulative, f"{Path(path).relative_to(ROOT)}:{line} {name}"))
    rows.sort(reverse=True)
    return {
        "functions_ms": {name: round(s * 1000 / repeats, 1) for s, name in rows[:25]},
        "statements_ms": {
            shape: round(s * 1000 / repeats, 2) for shape, s in statements.most_common(12)
        },
    }


# -- the bulk shop ---------------------------------------------------------------------


def bulk_seed(store: Store, users: int, event_count: int) -> dict:
    """bench/evaluate.py's shop through its bulk paths, profiles and stages as of its T."""
    import evaluate as evaluate_bench  # bench/evaluate.py, on sys.path beside this file

    started = time.perf_counter()
    timings, _history = evaluate_bench.load_shop(store, users, event_count, seed=7)
    with store.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(events)).scalar()
    return {
        "users": users,
        "events": stored,
        "seconds": time.perf_counter() - started,
        "load": {k: round(v, 1) if isinstance(v, float) else v for k, v in timings.items()},
        "T": evaluate_bench.T,
    }


# -- backends ----------------------------------------------------------------------------


def run_backend(name: str, args, folder: Path) -> dict:
    admin = database = None
    if name == "sqlite":
        url = f"sqlite:///{folder / 'nudge.db'}"
    else:
        base = os.environ.get("NUDGE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        database = f"nudge_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
        url = sa.engine.make_url(base).set(database=database).render_as_string(False)
    try:
        project = make_project(folder, url)
        settings = load_settings(project, environ={})
        engine = create_engine_for(url)
        upgrade(Store(engine=engine, settings=settings))
        engine.dispose()
        store = open_store(settings)
        try:
            result: dict[str, object] = {"backend": name}
            if args.bulk:
                result["seed"] = bulk_seed(store, args.users, args.events or 3 * args.users)
                # The daemon starts past CHANGE_LAG after the load's ingest (at T), or
                # days later: the shop's dates start crossing stage thresholds about a
                # day after T (its personas keep clear of the thresholds at T).
                start = result["seed"].pop("T") + timedelta(minutes=20, days=args.start_days)
                result["idle_tick"] = measure_idle_tick(
                    store,
                    args.ticks,
                    start=start,
                    step=timedelta(seconds=args.step),
                    profile=args.profile,
                )
                return result
            result["seed"] = seed(store, folder, args.users, utcnow())
            reachable = result["seed"].pop("reachable")
            result["settle"] = settle(store)
            if not args.idle_only:
                result["latency"] = measure_latency(
                    store, project, folder, reachable, args.rate, args.seconds
                )
            result["idle_tick"] = measure_idle_tick(store, args.ticks, profile=args.profile)
            return result
        finally:
            store.dispose()
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.dispose()


def print_result(r: dict) -> None:
    s, lat, idle = r["seed"], r.get("latency"), r["idle_tick"]
    if "settle" in r:
        settled = (
            f"initial sweep {r['settle']['seconds']:.1f} s, "
            f"{r['settle']['backlog']} actions marked sent"
        )
    else:
        settled = f"bulk load {s['load']}"
    print(
        f"== {r['backend']}: {s['users']} users, {s['events']} past events (seeded in "
        f"{s['seconds']:.1f} s); {settled}"
    )
    if lat is not None:
        print_latency(lat)
    print_idle(idle)


def print_latency(lat: dict) -> None:
    print(
        f"   stream: {lat['events']} purchases at {lat['rate_per_s']}/s; load average "
        f"{lat['load_before']} -> {lat['load_after']}; planned by ticks woken by "
        f"{lat['planned_by_tick']}, {lat['planned_over_5s']} planned over 5 s after ingest"
    )
    for label, key, target in (
        ("ingest -> planned (created_at)", "planned_s", "target p95 <= 5 s"),
        ("ingest -> planned (tick committed)", "planned_committed_s", ""),
        ("ingest -> delivered (sent_at)", "delivered_s", "target p95 <= 10 s"),
    ):
        p = lat[key]
        print(
            f"   {label:36} p50 {p['p50']:6.3f} s  p95 {p['p95']:6.3f} s  max {p['max']:6.3f} s"
            f"  {target}"
        )


def print_idle(idle: dict) -> None:
    print(
        f"   daemon start (full sweep) {idle['sweep_s']} s; clock: {idle['clock']}; stage "
        f"entries per tick {idle['stage_entries']}, decisions {idle['decided']} (time-driven "
        f"only); open stages of {idle['stages_checked']} users = a full recomputation"
    )
    print(
        f"   idle tick ({idle['rules']} rules, {idle['repeats']} times; target <= 50 ms at "
        "10k users, <= 1 s at 1M): p50 "
        f"{idle['tick_ms']['p50']} ms (min {idle['tick_ms']['min']}, max "
        f"{idle['tick_ms']['max']}): rule reload "
        f"{idle['reload_ms']} ms + evaluate {idle['evaluate_ms']} ms (rules {idle['rules_ms']} "
        f"ms, slowest {idle['slowest_rules_ms']}); load average {idle['load']}"
    )
    print(
        f"   hand-written limit: {idle['statements']} x indexed SELECT 1 ... LIMIT 1 (the "
        f"tick's statement count, interleaved) p50 {idle['hand_ms']['p50']} ms (min "
        f"{idle['hand_ms']['min']}); ratio tick / hand {idle['ratio']}x"
    )
    for title, key in (("functions (cumulative)", "functions_ms"), ("statements", "statements_ms")):
        if "profile" in idle:
            print(f"   per tick, {title}, ms:")
            for name, value in idle["profile"][key].items():
                print(f"     {value:9.2f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5.0, help="purchases per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they stream")
    parser.add_argument("--ticks", type=int, default=10, help="idle ticks timed")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--idle-only", action="store_true", help="only the idle tick (no daemon, no stream)"
    )
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="only the idle tick, on bench/evaluate.py's shop loaded by its bulk paths, "
        "in simulated time (for large --users)",
    )
    parser.add_argument(
        "--events", type=int, help="with --bulk: past events in all (default 3 per user)"
    )
    parser.add_argument(
        "--step", type=float, default=60.0, help="with --bulk: seconds between ticks"
    )
    parser.add_argument(
        "--start-days",
        type=float,
        default=0.0,
        help="with --bulk: start the daemon this many days after the shop's T + 20 min "
        "(from about 1, time alone moves users across stage thresholds every minute)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="where the idle ticks' time goes (cProfile)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "load_at_start": load(),
        "backends": [],
    }
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for name in names:
        with tempfile.TemporaryDirectory(prefix="nudge-latency-") as folder:
            result = run_backend(name, args, Path(folder))
        results["backends"].append(result)
        if not args.json:
            print_result(result)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
