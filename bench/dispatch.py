"""Dispatch benchmark: outbox drain rate against the limit of the same work done by hand.

Each case fills a fresh outbox (SQLite file, or a PostgreSQL database created on
NUDGE_BENCH_POSTGRES_URL and dropped afterwards), drains it with `dispatch_until_idle`
through the real policies and action kinds, and then checks that the work was done:
every action `sent` in the outbox and, for SMTP and webhooks, every message counted
(once) by the sink. Beside it, in the same run, the limit: the same rows claimed and
marked sent by two hand-written statements per batch (noop), or the same number of
messages of the same size sent with raw smtplib / httpx to the same sink. Nudge and
its limit alternate, `--repeat` times; min and median are printed, and the ratio,
and the CPU each action cost the measured process (steadier than rates on a busy machine).
Where there is a sink, the CPU each message cost the sink process too (utime + stime
from /proc/<pid>/stat, in clock ticks of 10 ms: use n >= 1,000), and from the two the
bounds of a machine with 2 cores that runs both: 2 / (client + sink CPU) per second
for a client that keeps both cores busy, 1 / (client + sink CPU) when client and sink
take turns (one thread, nothing overlapped). The bounds leave out PostgreSQL's own CPU
(another process on the same cores), and the sink's CPU per message is not a constant:
it grows when messages come slower (a sink that sleeps between them wakes up for each).

- noop: webhook actions into a channel that accepts everything (dispatcher overhead);
  targets >= 20,000 actions/s on SQLite, >= 10,000/s on PostgreSQL; `--dispatchers N`
  also runs N dispatchers at once (`[delivery] dispatchers`), against the same
  one-thread limit;
- smtp: coupon + email actions of templates/winback (the coupon issued by a first,
  untimed pass, as the planner's coupon action does), one SMTP connection to an
  aiosmtpd sink that offers PIPELINING as production servers do (not with
  `--sink-without-pipelining`), with the product's default `[delivery.email] pipelined`
  (`--compare-pipelining` also runs it with the other setting); target >= 0.9x raw
  smtplib on one connection. A second limit, "by hand": the same templates rendered
  with a plain Jinja sandbox, composed with email.message.EmailMessage and sent with
  smtplib's send_message on one connection (bench/email_reference.py);
- smtp-pool: the same over `--connections` (default 4) pooled connections, against
  raw smtplib on as many threads; target >= 1,000 emails/s;
- webhook / webhook-pool: signed POSTs over httpx keep-alive to a local HTTP sink,
  one at a time / `--connections` at once.

Sinks run in their own process, so that they do not take the measured process's CPU.

    .venv/bin/python bench/dispatch.py                           # every case
    .venv/bin/python bench/dispatch.py --only noop --backend sqlite -n 50000 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import smtplib
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import email_reference  # noqa: E402 - bench/, beside this file

from engine.config import RulesSettings, Settings  # noqa: E402
from engine.delivery.channels import ChannelSet  # noqa: E402
from engine.delivery.channels.http import HttpChannel  # noqa: E402
from engine.delivery.channels.smtp import SmtpChannel  # noqa: E402
from engine.delivery.config import EmailConfig  # noqa: E402
from engine.delivery.dispatcher import dispatch_until_idle  # noqa: E402
from engine.delivery.runner import run_dispatchers  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.store.database import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402
from engine.store.people import User  # noqa: E402
from engine.store.planning import OutboxAction  # noqa: E402

NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
EMAILS_DUE = NOW + timedelta(seconds=1)  # after the coupon pass
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
COUPON = {"value": 20, "currency": "CNY", "min_order": 100, "expires_in": "14d"}
CASES = ("noop", "smtp", "smtp-pool", "webhook", "webhook-pool")
DEFAULT_N = {"noop": 20_000, "smtp": 2_000, "smtp-pool": 2_000, "webhook": 2_000}
outbox = OutboxAction.__table__


# --- the outbox ---------------------------------------------------------------------


def action_row(i: int, kind: str, payload: dict, *, due: datetime = NOW) -> dict:
    return {
        "idempotency_key": uuid.uuid4().hex,
        "decision_id": i,
        "run_id": 1,
        "rule_id": "bench",
        "user_id": f"u{i:07d}",
        "kind": kind,
        "channel": kind,
        "priority": 0,
        "payload": payload,
        "state": "planned",
        "attempts": 0,
        "next_attempt_at": due,
        "created_at": NOW,
        "updated_at": NOW,
    }


def fill(store: Store, n: int, actions: list[tuple[str, dict, datetime]]) -> None:
    """n users, and for each the given (kind, payload, due) actions of one decision."""
    users = [
        {
            "id": f"u{i:07d}",
            "email": f"u{i:07d}@example.com",
            "name": f"Ada {i}",
            "locale": "en",
            "email_opt_in": True,
            "sms_opt_in": True,
            "ads_opt_in": True,
            "attributes": {},
            "created_at": NOW,
            "updated_at": NOW,
        }
        for i in range(n)
    ]
    rows = [
        action_row(i, kind, payload, due=due) for kind, payload, due in actions for i in range(n)
    ]
    with store.begin() as connection:
        connection.execute(sa.insert(User.__table__), users)
        connection.execute(sa.insert(outbox), rows)
    if store.engine.dialect.name == "postgresql":
        # As in a shop: the planner analyses the outbox after writing many rows
        # (engine/planning/statistics.py) and autovacuum the users after an import.
        # Without statistics, PostgreSQL read each batch's 1,000 users by a sequential
        # scan of all of them (33 ms against 2.5 ms at 200,000 users).
        with store.begin() as connection:
            connection.exec_driver_sql("ANALYZE users")
            connection.exec_driver_sql("ANALYZE outbox")


def sent_count(store: Store, kind: str) -> int:
    query = sa.select(sa.func.count()).where(outbox.c.kind == kind, outbox.c.state == "sent")
    with store.read() as connection:
        return connection.execute(query).scalar_one()


class Backend:
    """A fresh migrated database, removed on exit."""

    def __init__(self, name: str, folder: Path):
        self.name, self.folder = name, folder

    def __enter__(self) -> Store:
        if self.name == "sqlite":
            url = f"sqlite:///{self.folder / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        else:
            base = os.environ.get("NUDGE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
            self.admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
            self.database = f"nudge_bench_{uuid.uuid4().hex[:10]}"
            with self.admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{self.database}"')
            url = sa.engine.make_url(base).set(database=self.database).render_as_string(False)
        rules = RulesSettings(templates=str(ROOT / "templates"))
        settings = Settings(project_dir=self.folder, rules=rules)
        self.store = Store(engine=create_engine_for(url), settings=settings)
        upgrade(self.store)
        return self.store

    def __exit__(self, *exc_info) -> None:
        self.store.dispose()
        if self.name == "postgresql":
            with self.admin.connect() as connection:
                connection.exec_driver_sql(
                    f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'
                )
            self.admin.dispose()


# --- sinks, each in its own process ---------------------------------------------------


def _smtp_sink(port: int, pipe, pipelining: bool) -> None:
    from aiosmtpd.controller import Controller

    seen: set[bytes] = set()
    counts = {"messages": 0, "bytes": 0}
    lock = threading.Lock()

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
            # aiosmtpd reads pipelined commands correctly but does not say so; the
            # servers a shop sends through (Postfix, Exim, Gmail...) do.
            session.host_name = hostname
            if pipelining:
                responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            content = envelope.original_content or envelope.content
            start = content.find(b"Message-ID:")
            key = content[start : content.find(b"\n", start)] if start >= 0 else b""
            with lock:
                counts["messages"] += 1
                counts["bytes"] += len(content)
                seen.add(key)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    _serve_counts(pipe, lock, counts, seen)
    controller.stop()


class _HttpSink:
    def __init__(self):
        from http.server import BaseHTTPRequestHandler

        sink = self
        self.seen: set[str] = set()
        self.counts = {"messages": 0, "bytes": 0}
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real webhook receiver

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                with sink.lock:
                    sink.counts["messages"] += 1
                    sink.counts["bytes"] += len(body)
                    sink.seen.add(self.headers.get("webhook-id", ""))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.handler = Handler


def _http_sink(port: int, pipe) -> None:
    from http.server import ThreadingHTTPServer

    sink = _HttpSink()
    server = ThreadingHTTPServer(("127.0.0.1", port), sink.handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _serve_counts(pipe, sink.lock, sink.counts, sink.seen)
    server.shutdown()


def _serve_counts(pipe, lock, counts, seen) -> None:
    pipe.send("ready")
    while pipe.recv() == "count":
        with lock:
            pipe.send({**counts, "distinct": len(seen)})


class Sink:
    """A sink process; `counts()` = messages, bytes and distinct keys received so far."""

    # A thread of the measured process instead (--sink-in-process): the sink then takes
    # the measured process's CPU, as the figures of issue 12 did.
    in_process = False
    # The SMTP sink offers PIPELINING (RFC 2920), as production mail servers do;
    # --sink-without-pipelining: as aiosmtpd by itself (one reply awaited per command).
    smtp_pipelining = True

    def __init__(self, kind: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.pipe, child = multiprocessing.Pipe()
        target, args = (
            (_smtp_sink, (self.port, child, self.smtp_pipelining))
            if kind == "smtp"
            else (_http_sink, (self.port, child))
        )
        runner = threading.Thread if self.in_process else multiprocessing.Process
        self.process = runner(target=target, args=args, daemon=True)
        self.process.start()
        assert self.pipe.recv() == "ready"

    def counts(self) -> dict:
        self.pipe.send("count")
        return self.pipe.recv()

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the sink process so far (None for a thread, or without
        /proc). Clock ticks: 10 ms steps on Linux."""
        if self.in_process:
            return None
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                # Fields after the command name in parentheses: state is field 3,
                # utime 14 and stime 15 (proc(5)).
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(5)


# --- Nudge and the limit, one run each -------------------------------------------------


def timed(work, sink: Sink | None = None) -> float:
    """Wall seconds of work(); its CPU seconds (this process, all threads) go to CPU,
    those of the sink process during it to SINK_CPU."""
    sink_cpu = sink.cpu_seconds() if sink is not None else None
    started, cpu = time.perf_counter(), time.process_time()
    work()
    seconds = time.perf_counter() - started
    CPU.append(time.process_time() - cpu)
    sink_after = sink.cpu_seconds() if sink_cpu is not None else None
    SINK_CPU.append(None if sink_after is None else sink_after - sink_cpu)
    return seconds


# CPU seconds of each timed run, in order: on a shared machine the CPU an email costs
# the measured process is steadier than its wall-clock rate.
CPU: list[float] = []
# The sink process's CPU seconds during each timed run (None: no sink, or a thread).
SINK_CPU: list[float | None] = []


class KeysChannel:
    """Accepts everything and keeps each message's idempotency key (n distinct keys:
    each action sent once). Not the messages: a daemon does not keep what it sent,
    and 20,000 kept messages (100,000+ objects) made the cyclic garbage collector run
    full collections that a daemon does not (80-90 ms per run of 1-1.4 s, SQLite)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def send(self, message) -> None:
        self.keys.add(message.key)

    def close(self) -> None:
        pass


def nudge_noop(backend: str, n: int, folder: Path, _sink, _width) -> float:
    with Backend(backend, folder) as store:
        fill(store, n, [("webhook", {"url": "https://example.com/hook"}, NOW)])
        channel = KeysChannel()
        seconds = timed(lambda: drain(store, ChannelSet({"webhook": channel}), 1000, NOW, n))
        assert len(channel.keys) == n and sent_count(store, "webhook") == n
    return seconds


def nudge_noop_dispatchers(backend: str, n: int, folder: Path, _sink, _width) -> float:
    """The noop case with `--dispatchers` dispatchers at once (`run_dispatchers`, as
    `[delivery] dispatchers` runs them in the daemon), batches of 1,000 as above."""
    with Backend(backend, folder) as store:
        settings = store.settings.model_copy(update={"delivery": {"batch_size": 1000}})
        store = Store(engine=store.engine, settings=settings)
        fill(store, n, [("webhook", {"url": "https://example.com/hook"}, NOW)])
        channel = KeysChannel()
        channels = ChannelSet({"webhook": channel})
        report = []

        def work():
            report.append(
                run_dispatchers(
                    store, dispatchers=DISPATCHERS, once=True, at=NOW, channels=channels
                )
            )

        seconds = timed(work)
        assert dict(report[0].outcomes) == {"sent": n}, report[0].as_dict()
        assert len(channel.keys) == n and sent_count(store, "webhook") == n
    return seconds


def limit_noop(backend: str, n: int, folder: Path, _sink, _width) -> float:
    """The same rows claimed and marked sent by hand: two statements per 1,000 rows.
    The claim reads the one priority the rows have (0) in due order: one range of the
    claim index (Nudge seeks each priority it finds, then reads it the same way)."""
    claim = sa.text(
        "UPDATE outbox SET state = 'claimed', claimed_by = :holder, lease_until = :lease, "
        "attempts = attempts + 1, updated_at = :now WHERE id IN (SELECT id FROM outbox "
        "WHERE state = 'planned' AND priority = 0 AND next_attempt_at <= :now "
        "ORDER BY next_attempt_at, id LIMIT 1000) "
        "RETURNING id, idempotency_key, user_id, kind, payload"
    ).bindparams(
        sa.bindparam("now", type_=outbox.c.updated_at.type),
        sa.bindparam("lease", type_=outbox.c.lease_until.type),
    )
    mark = sa.text(
        "UPDATE outbox SET state = 'sent', sent_at = :now, lease_until = NULL, "
        "updated_at = :now WHERE id IN :ids AND claimed_by = :holder"
    ).bindparams(
        sa.bindparam("ids", expanding=True), sa.bindparam("now", type_=outbox.c.updated_at.type)
    )
    with Backend(backend, folder) as store:
        fill(store, n, [("webhook", {"url": "https://example.com/hook"}, NOW)])
        at, lease = NOW, NOW + timedelta(minutes=5)

        def work():
            while True:
                with store.begin() as connection:
                    rows = connection.execute(
                        claim, {"holder": "limit", "lease": lease, "now": at}
                    ).all()
                if not rows:
                    return
                with store.begin() as connection:
                    ids = [row[0] for row in rows]
                    connection.execute(mark, {"now": at, "ids": ids, "holder": "limit"})

        seconds = timed(work)
        assert sent_count(store, "webhook") == n
    return seconds


def nudge_smtp(
    backend: str, n: int, folder: Path, sink: Sink, width: int, *, pipelined: bool | None = None
) -> float:
    """`pipelined`: None for the product's default (`[delivery.email] pipelined`)."""
    if pipelined is None:
        pipelined = EmailConfig().pipelined
    with Backend(backend, folder) as store:
        fill(store, n, [("coupon", COUPON, NOW), ("email", {"creative": "winback"}, EMAILS_DUE)])
        drain(store, ChannelSet({}), 500, NOW, n)  # the coupon actions: not timed
        before = sink.counts()
        pool = {"connections": width} if width > 1 else {}  # (runs on older code too)
        channel = SmtpChannel("127.0.0.1", sink.port, pipelined=pipelined, **pool)
        with ChannelSet({"email": channel}) as channels:
            seconds = timed(lambda: drain(store, channels, 500, EMAILS_DUE, n), sink)
        assert sent_count(store, "email") == n
        _assert_received(sink, before, n)
        SAMPLE["smtp"] = (sink.counts()["bytes"] - before["bytes"]) // n
    return seconds


# --compare-pipelining: the smtp case also runs Nudge with its one connection
# pipelined the other way than by default, alternating with the other two.
COMPARE_PIPELINING = False
OTHER_PIPELINING = "sequential" if EmailConfig().pipelined else "pipelined"


def nudge_smtp_other(backend: str, n: int, folder: Path, sink: Sink, width: int) -> float:
    return nudge_smtp(backend, n, folder, sink, width, pipelined=not EmailConfig().pipelined)


def limit_smtp(_backend: str, n: int, _folder: Path, sink: Sink, width: int) -> float:
    """n messages of the size Nudge sent, raw smtplib on `width` connections."""
    size = SAMPLE.get("smtp", 6000)
    body = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    before = sink.counts()

    def send(part: range) -> None:
        with smtplib.SMTP("127.0.0.1", sink.port) as connection:
            for i in part:
                head = f"Message-ID: <{i}.{uuid.uuid4().hex}@limit>\r\nSubject: x\r\n\r\n"
                connection.sendmail("shop@example.com", [f"u{i}@example.com"], head.encode() + body)

    seconds = timed(lambda: _in_threads(send, n, width), sink)
    _assert_received(sink, before, n)
    return seconds


def by_hand_smtp(_backend: str, n: int, _folder: Path, sink: Sink, _width: int) -> float:
    """The smtp case's templates rendered, composed and sent by hand on one connection:
    a plain Jinja sandbox, EmailMessage, send_message (bench/email_reference.py), with
    the users' values prepared before the clock starts."""
    renderer = email_reference.HandRenderer(ROOT / "templates")
    expires_at = (NOW + timedelta(days=14)).date()  # COUPON's expires_in, from NOW
    recipients = renderer.recipients(n, now=EMAILS_DUE, expires_at=expires_at)
    before = sink.counts()
    send = email_reference.send_all
    seconds = timed(lambda: send(renderer, recipients, "127.0.0.1", sink.port), sink)
    _assert_received(sink, before, n)
    SAMPLE["by_hand"] = (sink.counts()["bytes"] - before["bytes"]) // n
    return seconds


def nudge_webhook(backend: str, n: int, folder: Path, sink: Sink, width: int) -> float:
    with Backend(backend, folder) as store:
        url = f"http://127.0.0.1:{sink.port}/hook"
        fill(store, n, [("webhook", {"url": url}, NOW)])
        before = sink.counts()
        pool = {"concurrency": width} if width > 1 else {}
        with ChannelSet({"webhook": HttpChannel(**pool)}) as channels:
            seconds = timed(lambda: drain(store, channels, 500, NOW, n), sink)
        assert sent_count(store, "webhook") == n
        _assert_received(sink, before, n)
        SAMPLE["webhook"] = (sink.counts()["bytes"] - before["bytes"]) // n
    return seconds


def limit_webhook(_backend: str, n: int, _folder: Path, sink: Sink, width: int) -> float:
    """n JSON POSTs of the size Nudge sent, raw httpx on `width` threads."""
    import httpx

    url = f"http://127.0.0.1:{sink.port}/hook"
    padding = "x" * max(0, SAMPLE.get("webhook", 250) - 40)
    before = sink.counts()
    with httpx.Client() as client:

        def send(part: range) -> None:
            for i in part:
                body = json.dumps({"i": i, "pad": padding}).encode()
                headers = {"webhook-id": uuid.uuid4().hex, "content-type": "application/json"}
                client.post(url, content=body, headers=headers).raise_for_status()

        seconds = timed(lambda: _in_threads(send, n, width), sink)
    _assert_received(sink, before, n)
    return seconds


SAMPLE: dict[str, int] = {}  # bytes per message Nudge sent, for the limit's messages


def drain(store: Store, channels: ChannelSet, batch_size: int, at: datetime, n: int) -> None:
    report = dispatch_until_idle(
        store, now=at, worker_id="bench", channels=channels, batch_size=batch_size
    )
    assert dict(report.outcomes) == {"sent": n}, report.as_dict()


def _assert_received(sink: Sink, before: dict, n: int) -> None:
    after = sink.counts()
    received = after["messages"] - before["messages"]
    distinct = after["distinct"] - before["distinct"]
    assert received == n and distinct == n, f"sink got {received} ({distinct} distinct) of {n}"


def _in_threads(send, n: int, width: int) -> None:
    parts = [range(start, n, width) for start in range(width)]
    threads = [threading.Thread(target=send, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


BY_HAND = "by_hand"  # result key of the "render by hand + smtplib" limit
# --dispatchers N: the noop case also runs N dispatchers at once (result key SEVERAL).
DISPATCHERS = 1
SEVERAL = "several_dispatchers"

RUNS = {
    "noop": (nudge_noop, limit_noop, None),
    "smtp": (nudge_smtp, limit_smtp, "smtp"),
    "webhook": (nudge_webhook, limit_webhook, "http"),
}


def measure(case: str, backend: str, n: int, width: int, repeat: int, folder: Path) -> dict:
    """Nudge and its limit, alternating (which goes first alternates too)."""
    base = case.removesuffix("-pool")
    nudge, limit, sink_kind = RUNS[base]
    width = width if case.endswith("-pool") else 1
    sink = Sink(sink_kind) if sink_kind else None
    runs = [("nudge", nudge), ("limit", limit)]
    if case == "smtp" and COMPARE_PIPELINING:
        runs.insert(1, (OTHER_PIPELINING, nudge_smtp_other))
    if case == "noop" and DISPATCHERS > 1:
        runs.insert(1, (SEVERAL, nudge_noop_dispatchers))
    if case == "smtp":  # one connection: the limit with the rendering done by hand
        runs.append((BY_HAND, by_hand_smtp))
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    cpu: dict[str, list[float]] = {name: [] for name, _ in runs}
    sink_cpu: dict[str, list[float | None]] = {name: [] for name, _ in runs}
    try:
        for round_ in range(repeat):
            order = runs
            for name, run in order if round_ % 2 == 0 else reversed(order):
                times[name].append(run(backend, n, folder, sink, width))
                cpu[name].append(CPU[-1])
                sink_cpu[name].append(SINK_CPU[-1])
    finally:
        if sink is not None:
            sink.close()

    def rates(name: str) -> dict:
        seconds = times[name]
        result = {
            "best": round(n / min(seconds)),
            "median": round(n / statistics.median(seconds)),
            "seconds": [round(s, 3) for s in seconds],
            # CPU of the measured process per action, median (ms).
            "cpu_ms": round(statistics.median(cpu[name]) * 1000 / n, 3),
        }
        if sink is not None and None not in sink_cpu[name]:
            # Per message the sink received (each run asserted it received n).
            sink_ms = statistics.median(sink_cpu[name]) * 1000 / n
            both_ms = statistics.median(cpu[name]) * 1000 / n + sink_ms
            result["sink_cpu_ms"] = round(sink_ms, 3)
            # What the CPU per message allows on 2 cores shared by client and sink:
            # both cores busy, or client and sink taking turns (nothing overlapped).
            result["bound_2_cores"] = round(2000 / both_ms) if both_ms else None
            result["bound_serial"] = round(1000 / both_ms) if both_ms else None
        return result

    nudge_rates, limit_rates = rates("nudge"), rates("limit")
    result = {
        "case": case,
        "backend": backend,
        "n": n,
        "width": width,
        "nudge": nudge_rates,
        "limit": limit_rates,
        "ratio": round(nudge_rates["median"] / limit_rates["median"], 2),
    }
    if OTHER_PIPELINING in times:
        result[OTHER_PIPELINING] = rates(OTHER_PIPELINING)
    if SEVERAL in times:
        several = result[SEVERAL] = rates(SEVERAL)
        several["dispatchers"] = DISPATCHERS
        result["ratio_several"] = round(several["median"] / limit_rates["median"], 2)
    if BY_HAND in times:
        by_hand = result[BY_HAND] = rates(BY_HAND)
        result["ratio_by_hand"] = round(nudge_rates["median"] / by_hand["median"], 2)
    if SAMPLE and base == "smtp":
        # Message sizes the sink received: Nudge's; the by-hand one's differs a little.
        result["bytes_per_email"] = {"nudge": SAMPLE.get("smtp"), BY_HAND: SAMPLE.get("by_hand")}
    return result


def print_details(r: dict) -> None:
    """The by-hand limit, the sink's CPU and the 2-core bounds, under a case's line."""
    indent = " " * 37
    if BY_HAND in r:
        by_hand = r[BY_HAND]
        print(
            f"{indent}render by hand + smtplib {by_hand['median']:>6}/s "
            f"(best {by_hand['best']:>6})  nudge/by-hand {r['ratio_by_hand']:.2f}  "
            f"cpu/action {by_hand['cpu_ms']:.3f} ms",
            flush=True,
        )
    names = [name for name in ("nudge", "limit", OTHER_PIPELINING, BY_HAND) if name in r]
    measured = [(name, r[name]) for name in names if "sink_cpu_ms" in r[name]]
    if not measured:
        return
    label = {"limit": "limit", BY_HAND: "by hand"}
    print(
        f"{indent}sink cpu/message: "
        + ", ".join(f"{label.get(name, name)} {v['sink_cpu_ms']:.3f} ms" for name, v in measured),
        flush=True,
    )
    print(
        f"{indent}bound 2 cores / serial (1 / (client + sink cpu)): "
        + ", ".join(
            f"{label.get(name, name)} {v['bound_2_cores']}/{v['bound_serial']} /s"
            for name, v in measured
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="actions per run")
    parser.add_argument("--only", choices=CASES, action="append")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--connections", type=int, default=4, help="width of the -pool cases")
    parser.add_argument("--sink-in-process", action="store_true", help="sinks as threads")
    parser.add_argument(
        "--sink-without-pipelining",
        action="store_true",
        help="smtp: the sink does not offer PIPELINING (RFC 2920)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--dispatchers",
        type=int,
        default=1,
        help="noop: also run Nudge with this many dispatchers at once ([delivery] dispatchers)",
    )
    parser.add_argument(
        "--compare-pipelining",
        action="store_true",
        help="smtp: also run Nudge with [delivery.email] pipelined the other way",
    )
    args = parser.parse_args()
    Sink.in_process = args.sink_in_process
    Sink.smtp_pipelining = not args.sink_without_pipelining
    global COMPARE_PIPELINING, DISPATCHERS
    COMPARE_PIPELINING = args.compare_pipelining
    DISPATCHERS = args.dispatchers
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for case in args.only or CASES:
            for backend in args.backend or ["sqlite", "postgresql"]:
                if case != "noop" and backend == "postgresql" and not args.backend:
                    continue  # channel rates do not depend on the database
                n = args.n or DEFAULT_N[case.removesuffix("-pool")]
                r = measure(case, backend, n, args.connections, args.repeat, Path(folder))
                results.append(r)
                if not args.json:
                    print(
                        f"{r['case']:12} {r['backend']:10} n={r['n']:<6} x{r['width']}  "
                        f"nudge {r['nudge']['median']:>6}/s (best {r['nudge']['best']:>6})  "
                        f"limit {r['limit']['median']:>6}/s (best {r['limit']['best']:>6})  "
                        f"ratio {r['ratio']:.2f}  cpu/action {r['nudge']['cpu_ms']:.3f} ms "
                        f"(limit {r['limit']['cpu_ms']:.3f})",
                        flush=True,
                    )
                    if SEVERAL in r:
                        several = r[SEVERAL]
                        print(
                            f"{'':37}{several['dispatchers']} dispatchers "
                            f"{several['median']:>6}/s (best {several['best']:>6})  "
                            f"ratio {r['ratio_several']:.2f} (to the one-thread limit)  "
                            f"cpu/action {several['cpu_ms']:.3f} ms",
                            flush=True,
                        )
                    if OTHER_PIPELINING in r:
                        other = r[OTHER_PIPELINING]
                        print(
                            f"{'':37}{OTHER_PIPELINING} {other['median']:>6}/s "
                            f"(best {other['best']:>6})  "
                            f"ratio {other['median'] / r['limit']['median']:.2f}  "
                            f"cpu/action {other['cpu_ms']:.3f} ms",
                            flush=True,
                        )
                    print_details(r)
    load = {"before": load_before, "after": os.getloadavg()}
    machine = {
        "sinks": "threads of this process" if args.sink_in_process else "own processes",
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": {k: [round(x, 2) for x in v] for k, v in load.items()},
    }
    if args.json:
        print(json.dumps({**machine, "results": results}, indent=2))
    else:
        print(f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}")


if __name__ == "__main__":
    main()
