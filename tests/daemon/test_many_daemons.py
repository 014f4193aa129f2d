"""Three `nudge run` processes on one PostgreSQL database, one of them killed -9 (issue 9).

Three real daemons (subprocesses, as an operator starts them) share the test's own
PostgreSQL database. A rule sends an email (real SMTP server, aiosmtpd) and a signed
webhook (real HTTP server) for every purchase; purchases stream in through the real
ingest path for about 20 seconds, a few per second in small bursts. Half-way through,
one daemon is killed with SIGKILL *while one of its webhook requests is in flight* (the
HTTP sink kills the sender of the first request it receives after half-time, before
answering), so the killed daemon always leaves claimed rows behind, which another
daemon must take over once their (short) lease ends.

Afterwards, waiting with deadlines:

- every purchase event has exactly one decision (the unique key makes a second one
  impossible; the test checks that none is missing either) and every decision planned
  one email and one webhook;
- every planned action was received by its sink, counted by its idempotency key (the
  email's Message-ID, the `webhook-id` header): the set of ids received equals the set
  of planned actions. Delivery is at-least-once to the channel: the killed daemon may
  have handed some of its claimed rows to a channel before it died without recording
  them; whoever takes them over re-sends them with the *same* id. So an id may be
  received twice only if it was one of the rows the killed daemon held when it died,
  and the number of duplicate receipts is at most the number of those rows. A sink
  that dedupes by id (as HttpSink does) sees each action once in effect;
- the two survivors stop on SIGTERM and exit 0.

The second run answers every webhook after 300 ms, so batches take longer than
`recheck` (sub-batches are cut and re-checked) and than a third of the lease (leases
are renewed while a batch is in flight).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.clock import monotonic, utcnow
from engine.delivery.channels.signing import verify
from engine.delivery.claims import worker_of
from engine.delivery.email_message import message_id
from engine.ingest import ingest_files
from engine.store.database import create_engine_for
from engine.store.people import Event
from engine.store.planning import DaemonProcess, Decision, OutboxAction
from tests.conftest import make_settings
from tests.delivery.sinks import HttpSink, SmtpSink
from tests.planning.helpers import write_rule

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FROM = "hello@shop.example.com"
RULE = """\
trigger: {event: purchase}
actions:
  email: {creative: thank-you}
  webhook: {url: crm, body: {source: many-daemons}}
"""
DAEMONS = 3
USERS = 24
STREAM_SECONDS = 20.0
BURST_EVERY = 2.0  # seconds between two ingests...
BURST_SIZE = 8  # ...of this many purchases: 4 a second
LEASE_SECONDS = 4  # a takeover well within the test; renewed every 1.3 s while sending

outbox = OutboxAction.__table__
decisions = Decision.__table__
events = Event.__table__


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = monotonic() + timeout
    while not condition():
        if monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def log_lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class Daemon:
    """One `nudge run --log-format json` process, its output in files (no pipe to fill)."""

    def __init__(self, number: int, project_dir: Path, env: dict[str, str], folder: Path):
        self.number = number
        self.log = folder / f"daemon-{number}.log"
        self.errors = folder / f"daemon-{number}.err"
        with self.log.open("w") as out, self.errors.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from cli import app; app()", "run", "--log-format", "json"],
                cwd=project_dir,
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def lines(self) -> list[dict]:
        return log_lines(self.log)

    def started(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon {self.number} exited: {self.errors.read_text()}")
        return any(line["event"] == "start" for line in self.lines())

    def stderr(self) -> str:
        return self.errors.read_text(encoding="utf-8") if self.errors.exists() else ""


class Killer:
    """Kills, from inside the HTTP sink, the daemon whose webhook request arrives first
    once `armed` is set, before answering it: the victim dies with that row (and the
    rest of its batch) claimed. Records which rows it held when it died."""

    def __init__(self, database_url: str, daemons: list[Daemon], delay: float):
        self.engine = create_engine_for(database_url)
        self.daemons = {daemon.pid: daemon for daemon in daemons}
        self.delay = delay
        self.armed = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.victim: Daemon | None = None
        self.in_flight: dict[str, str] = {}  # idempotency key -> kind, held at death
        self.error: BaseException | None = None

    def on_request(self, number: int, request: dict) -> None:
        if self.armed.is_set():
            with self.lock:
                if not self.done.is_set():
                    try:
                        self._kill_sender(request)
                    except BaseException as exc:  # noqa: BLE001 - reported by the test
                        self.error = exc
                    finally:
                        self.done.set()
        if self.delay:
            time.sleep(self.delay)

    def _kill_sender(self, request: dict) -> None:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        with self.engine.connect() as connection:
            holder = connection.execute(
                sa.select(outbox.c.claimed_by).where(
                    outbox.c.idempotency_key == headers["webhook-id"]
                )
            ).scalar_one()
        worker = worker_of(holder)  # host:pid
        victim = self.daemons[int(worker.rsplit(":", 1)[1])]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        self.victim = victim
        # Its claims stay until their lease ends: nobody can take them before we look.
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(outbox.c.idempotency_key, outbox.c.kind).where(
                    outbox.c.state == "claimed", outbox.c.claimed_by.like(f"{worker}#%")
                )
            ).all()
        self.in_flight = {key: kind for key, kind in rows}

    def close(self) -> None:
        self.engine.dispose()


def write_project(settings, smtp: SmtpSink, http: HttpSink) -> None:
    make_settings(
        settings.project_dir,
        shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
        database={"url": settings.database.url},
        rules={"templates": str(REPO_TEMPLATES)},
        # Ingest wakes the daemons at once; the timer tick only catches what a wake-up
        # evaluation skipped. An event rule's run slot is its evaluation instant to the
        # second (engine/triggers/base.py instant_slot), so an evaluation in the same
        # second as an earlier one finds the slot claimed and plans nothing: an event
        # committed in between waits for the next evaluation in a later second, at worst
        # the timer tick. 10 s instead of 60 keeps such a straggler (a latency issue,
        # measured by bench/latency.py) within the drain deadline of this test.
        daemon={"tick_seconds": 10},
        delivery={
            "lease": f"{LEASE_SECONDS}s",
            "batch_size": 10,
            "sub_batch_size": 5,
            "recheck": "1s",
        },
        **{
            "delivery.email": {
                "backend": "smtp",
                "host": "127.0.0.1",
                "port": smtp.port,
                "timeout": 10,
                "from_address": FROM,
                "unsubscribe_url": "https://shop.example.com/u/{token}",
            },
            "delivery.webhook": {"backend": "http", "timeout": 10},
            "delivery.webhooks.crm": {
                "url": f"{http.url}/crm",
                "secret_env": "NUDGE_WEBHOOK_CRM_SECRET",
            },
        },
    )
    write_rule(settings, "thanks", RULE)


def ingest_rows(store, folder: Path, name: str, rows: list[dict], kind: str) -> None:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = ingest_files(
        store, [path], now=utcnow(), kind=kind, rejects_path=path.with_suffix(".rej")
    )
    assert not report.rejected, report.rejected


def stream_purchases(store, folder: Path, killer: Killer) -> int:
    """Bursts of purchases for STREAM_SECONDS (several per user over the run); arms the
    killer half-way. Returns the number of purchases ingested."""
    started = monotonic()
    count = 0
    burst = 0
    while monotonic() - started < STREAM_SECONDS:
        if monotonic() - started >= STREAM_SECONDS / 2:
            killer.armed.set()
        at = utcnow().isoformat()
        rows = []
        for _ in range(BURST_SIZE):
            rows.append(
                {
                    "event_id": f"p{count:04d}",
                    "user": f"u{count % USERS:02d}",
                    "type": "purchase",
                    "at": at,
                    "amount": 10 + count % 90,
                }
            )
            count += 1
        ingest_rows(store, folder, f"purchases-{burst:03d}", rows, "events")
        burst += 1
        next_burst = started + burst * BURST_EVERY
        time.sleep(max(0.0, next_burst - monotonic()))
    return count


def outbox_done(store, expected: int) -> bool:
    with store.connect() as connection:
        states = connection.execute(
            sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)
        ).all()
    return dict(states) == {"sent": expected}


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("webhook_delay", [0.0, 0.3], ids=["fast-sink", "slow-sink"])
def test_three_daemons_one_killed_every_action_delivered_once(
    backend, settings, store, tmp_path, webhook_delay
):
    feed = tmp_path / "feed"
    feed.mkdir()
    env = {
        **os.environ,
        "NUDGE_DATABASE_URL": settings.database.url,
        "NUDGE_WEBHOOK_CRM_SECRET": SECRET,
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    daemons: list[Daemon] = []
    killer: Killer | None = None
    with SmtpSink() as smtp, HttpSink(on_request=lambda n, r: killer.on_request(n, r)) as http:
        write_project(settings, smtp, http)
        users = [
            {"id": f"u{i:02d}", "email": f"u{i:02d}@example.com", "email_opt_in": True}
            for i in range(USERS)
        ]
        ingest_rows(store, feed, "users", [{**u, "locale": "en"} for u in users], "users")
        try:
            daemons = [Daemon(n, settings.project_dir, env, tmp_path) for n in range(DAEMONS)]
            killer = Killer(settings.database.url, daemons, webhook_delay)
            wait_for(lambda: all(d.started() for d in daemons), 60, "the daemons to start")

            purchases = stream_purchases(store, feed, killer)
            # The kill happens inside the first webhook request after half-time.
            assert killer.done.wait(timeout=30), "no webhook arrived after half-time"
            assert killer.error is None, repr(killer.error)
            victim = killer.victim
            assert victim is not None and victim.process.returncode == -signal.SIGKILL
            survivors = [d for d in daemons if d is not victim]

            # Drained: every action sent, including the victim's, taken over after its
            # lease (4 s) ended.
            wait_for(lambda: outbox_done(store, 2 * purchases), 60, "the outbox to drain")

            for daemon in survivors:
                daemon.process.send_signal(signal.SIGTERM)
            for daemon in survivors:
                daemon.process.wait(timeout=20)
                assert daemon.process.returncode == 0, daemon.stderr()
        finally:
            for daemon in daemons:
                if daemon.process.poll() is None:
                    daemon.process.kill()
                    daemon.process.wait()
            if killer is not None:
                killer.close()
        webhook_requests = list(http.requests)
        emails = list(smtp.messages)

    # Every purchase decided exactly once, and planned.
    with store.connect() as connection:
        event_ids = set(
            connection.execute(sa.select(events.c.id).where(events.c.type == "purchase")).scalars()
        )
        decided = connection.execute(
            sa.select(decisions.c.event_id, decisions.c.outcome).where(
                decisions.c.rule_id == "thanks"
            )
        ).all()
        actions = connection.execute(
            sa.select(outbox.c.idempotency_key, outbox.c.kind, outbox.c.attempts)
        ).all()
        daemon_rows = connection.execute(
            sa.select(DaemonProcess.__table__.c.pid, DaemonProcess.__table__.c.stopped_at)
        ).all()
    assert len(event_ids) == purchases
    assert Counter(event_id for event_id, _ in decided) == Counter(event_ids)  # once each
    assert {outcome for _, outcome in decided} == {"planned"}
    assert Counter(kind for _, kind, _ in actions) == {"email": purchases, "webhook": purchases}

    # Every planned action received, by its idempotency key; repeats only of rows the
    # killed daemon held when it died (re-sent with the same key by the taker).
    planned = {key: kind for key, kind, _ in actions}
    webhook_headers = [{k.lower(): v for k, v in r["headers"].items()} for r in webhook_requests]
    received = Counter(headers["webhook-id"] for headers in webhook_headers)
    by_message_id = {message_id(key, FROM): key for key, kind in planned.items() if kind == "email"}
    received.update(by_message_id[m["Message-ID"].strip()] for m in emails)
    assert set(received) == set(planned)
    repeats = {key: n - 1 for key, n in received.items() if n > 1}
    assert set(repeats) <= set(killer.in_flight), (repeats, killer.in_flight)
    assert sum(repeats.values()) <= len(killer.in_flight)
    assert http.duplicates == sum(n for key, n in repeats.items() if planned[key] == "webhook")
    # The request the victim died in was in flight: it was claimed, and taken over.
    assert any(kind == "webhook" for kind in killer.in_flight.values())
    taken_over = {key for key, _, attempts in actions if attempts > 1}
    assert set(killer.in_flight) <= taken_over

    # Every request signed (Standard Webhooks), with the rule's body.
    for request, headers in zip(webhook_requests, webhook_headers, strict=True):
        assert verify(SECRET, headers, request["body"].decode())
        body = json.loads(request["body"])
        assert body["type"] == "nudge.webhook" and body["data"]["source"] == "many-daemons"

    # Survivors signed off; the victim never did. No tick or dispatch pass failed.
    assert sorted(pid for pid, stopped in daemon_rows if stopped is None) == [victim.pid]
    assert sorted(pid for pid, stopped in daemon_rows if stopped is not None) == sorted(
        d.pid for d in survivors
    )
    for daemon in daemons:
        lines = daemon.lines()
        assert [line for line in lines if line["event"] == "error"] == [], daemon.number
        rules = [r for line in lines if line["event"] == "tick" for r in line["rules"]]
        assert [r for r in rules if r["status"] == "failed"] == [], daemon.number
    for daemon in survivors:
        assert daemon.lines()[-1]["event"] == "stop"
