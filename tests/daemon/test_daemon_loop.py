"""The daemon loop for real: woken by an ingest, delivering, stopping cleanly.

These run a real `nudge run` (in a thread, or a process for signals) against the
parametrised store and wait for what it does, with deadlines rather than sleeps.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.clock import monotonic, utcnow
from engine.daemon import run_daemon
from engine.daemon_log import DaemonLog
from engine.store.planning import DaemonProcess, OutboxAction
from tests.planning.helpers import ingest, write_rule

THANKS = "trigger: {event: purchase}\nactions:\n  tag: {add: [thanked]}\n"


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = monotonic() + timeout
    while not condition():
        if monotonic() > deadline:
            raise AssertionError("timed out waiting for the daemon")
        threading.Event().wait(0.05)


def _beat_after_start(store, d) -> bool:
    with store.connect() as connection:
        row = connection.execute(sa.select(d.c.started_at, d.c.heartbeat_at)).first()
    return row is not None and row.heartbeat_at > row.started_at


def _daemon_thread(settings, stop: threading.Event, log: io.StringIO) -> threading.Thread:
    """`nudge run` on a thread, started: a 600 s timer tick, JSON log into `log`."""
    daemon = threading.Thread(
        target=run_daemon,
        kwargs={
            "project_dir": settings.project_dir,
            "stop": stop,
            "tick_seconds": 600,
            "log": DaemonLog("json", log),
        },
    )
    daemon.start()
    return daemon


def outbox_states(store) -> list[str]:
    o = OutboxAction.__table__
    with store.connect() as connection:
        return list(connection.execute(sa.select(o.c.state)).scalars())


def test_an_ingested_purchase_is_planned_and_delivered_within_seconds(store, settings, tmp_path):
    write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=utcnow(), users=[{"id": "a"}])
    stop = threading.Event()
    log = io.StringIO()
    # A long tick: only the ingest's wake-up can explain a prompt plan.
    daemon = _daemon_thread(settings, stop, log)
    try:
        # After the first tick (its heartbeat): the purchase can only be seen by a
        # wake-up, not by the start.
        d = DaemonProcess.__table__
        wait_for(lambda: _beat_after_start(store, d))
        started = monotonic()
        now = utcnow()
        ingest(
            store,
            tmp_path,
            now=now,
            events=[{"user": "a", "type": "purchase", "at": now.isoformat(), "amount": 5}],
        )
        wait_for(lambda: outbox_states(store) == ["sent"])
        elapsed = monotonic() - started
    finally:
        stop.set()
        daemon.join(timeout=15)
    assert not daemon.is_alive(), "the daemon did not stop"
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    ticks = [line for line in lines if line["event"] == "tick"]
    assert [t["reason"] for t in ticks] == ["new data"] and ticks[0]["planned"] == 1
    assert [line["event"] for line in lines][-1] == "stop"
    assert elapsed < 15  # woken by the ingest, not by the 600 s tick
    d = DaemonProcess.__table__
    with store.connect() as connection:
        assert connection.execute(sa.select(d.c.stopped_at)).scalar() is not None


def test_sigterm_stops_the_daemon_cleanly(settings, monkeypatch):
    write_rule(settings, "thanks", THANKS)
    env = {**os.environ, "NUDGE_DATABASE_URL": settings.database.url}
    with subprocess.Popen(
        [sys.executable, "-c", "from cli import app; app()", "run", "--log-format", "json"],
        cwd=settings.project_dir,
        env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            first = process.stdout.readline()
            assert json.loads(first)["event"] == "start", first + process.stderr.read()
            sent = monotonic()
            process.send_signal(signal.SIGTERM)
            rest, errors = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, errors
    assert monotonic() - sent < 10
    assert json.loads(rest.splitlines()[-1])["event"] == "stop"


def test_tick_seconds_are_validated(settings, monkeypatch):
    monkeypatch.chdir(settings.project_dir)
    result = CliRunner().invoke(app, ["run", "--tick-seconds", "7200"])
    assert result.exit_code == 1
    assert "--tick-seconds must be between 1 and 3600, not 7200" in result.output


def test_status_lists_the_daemon_and_the_rules(store, settings, tmp_path, monkeypatch):
    write_rule(settings, "thanks", THANKS)
    write_rule(
        settings, "monday", 'trigger: {schedule: "0 10 * * MON"}\nactions:\n  tag: {add: [m]}\n'
    )
    monkeypatch.chdir(settings.project_dir)
    run_daemon(settings.project_dir, once=True, log=DaemonLog("text", io.StringIO()))

    data = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)

    assert [(d["state"], d["pid"]) for d in data["daemons"]] == [("stopped", os.getpid())]
    rules = {r["rule"]: r for r in data["rules"]}
    assert set(rules) == {"thanks", "monday"}
    next_fire = datetime.fromisoformat(rules["monday"]["next_fire"])
    assert next_fire.weekday() == 0 and next_fire - datetime.now(UTC) < timedelta(days=8)


def test_a_daemon_with_two_dispatchers_delivers_every_action_once(store, settings, tmp_path):
    """`[delivery] dispatchers = 2`: both dispatcher threads start after the first tick,
    share the outbox (each action delivered once, by a numbered worker) and stop with
    the daemon."""
    with (settings.project_dir / "nudge.toml").open("a", encoding="utf-8") as toml:
        toml.write("\n[delivery]\ndispatchers = 2\nbatch_size = 3\n")
    write_rule(settings, "thanks", THANKS)
    now = utcnow()
    users = [{"id": f"u{n}"} for n in range(12)]
    purchases = [
        {"user": f"u{n}", "type": "purchase", "at": now.isoformat(), "amount": 5} for n in range(12)
    ]
    ingest(store, tmp_path, now=now, users=users, events=purchases)
    stop = threading.Event()
    daemon = _daemon_thread(settings, stop, io.StringIO())
    try:
        wait_for(lambda: outbox_states(store) == ["sent"] * 12)
        dispatchers = [t.name for t in threading.enumerate() if t.name.startswith("nudge-disp")]
    finally:
        stop.set()
        daemon.join(timeout=15)
    assert not daemon.is_alive(), "the daemon did not stop"
    assert sorted(dispatchers) == ["nudge-dispatch-1", "nudge-dispatch-2"]
    assert not [t for t in threading.enumerate() if t.name.startswith("nudge-disp")]
    o = OutboxAction.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(o.c.claimed_by, o.c.attempts)).all()
    workers = {claimed_by.split("#")[0].rsplit("/", 1)[1] for claimed_by, _ in rows}
    assert workers <= {"1", "2"} and {attempts for _, attempts in rows} == {1}
