"""Dispatch benchmark: outbox drain rate with a no-op channel, SMTP and webhooks.

Fills a fresh outbox (SQLite file and/or a PostgreSQL database created on
NUDGE_BENCH_POSTGRES_URL and dropped afterwards) and drains it with
`dispatch_until_idle`, through the real policies and action kinds:

- noop: webhook actions into a channel that accepts everything (dispatcher overhead);
  targets >= 20,000 actions/s on SQLite, >= 10,000/s on PostgreSQL;
- smtp: email actions rendered from templates/winback, over one pooled connection to
  a local aiosmtpd server; target >= 200 emails/s;
- webhook: signed POSTs over httpx keep-alive to a local HTTP server; target >= 500/s.

    .venv/bin/python bench/dispatch.py                          # all, both backends
    .venv/bin/python bench/dispatch.py --only noop --backend sqlite -n 50000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import RulesSettings, Settings  # noqa: E402
from engine.delivery.channels import ChannelSet, NoopChannel  # noqa: E402
from engine.delivery.channels.http import HttpChannel  # noqa: E402
from engine.delivery.channels.smtp import SmtpChannel  # noqa: E402
from engine.delivery.dispatcher import dispatch_until_idle  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.store.database import create_engine_for  # noqa: E402
from engine.store.migrations import upgrade  # noqa: E402
from engine.store.people import User  # noqa: E402
from engine.store.planning import OutboxAction  # noqa: E402

NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fill(store: Store, n: int, kind: str, payload: dict) -> None:
    users, rows = [], []
    for i in range(n):
        user_id = f"u{i:07d}"
        users.append(
            {
                "id": user_id,
                "email": f"{user_id}@example.com",
                "locale": "en",
                "email_opt_in": True,
                "sms_opt_in": True,
                "ads_opt_in": True,
                "attributes": {},
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        rows.append(
            {
                "idempotency_key": uuid.uuid4().hex,
                "decision_id": i,
                "run_id": 1,
                "rule_id": "bench",
                "user_id": user_id,
                "kind": kind,
                "channel": kind,
                "priority": 0,
                "payload": payload,
                "state": "planned",
                "attempts": 0,
                "next_attempt_at": NOW,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    with store.begin() as connection:
        connection.execute(sa.insert(User.__table__), users)
        connection.execute(sa.insert(OutboxAction.__table__), rows)


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


def drain(store: Store, channels: ChannelSet, batch_size: int) -> tuple[float, dict]:
    started = time.perf_counter()
    report = dispatch_until_idle(
        store, now=NOW, worker_id="bench", channels=channels, batch_size=batch_size
    )
    return time.perf_counter() - started, report.as_dict()


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real webhook receiver would

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def run(case: str, backend: str, n: int, folder: Path) -> dict:
    with Backend(backend, folder) as store:
        if case == "noop":
            fill(store, n, "webhook", {"url": "https://example.com/hook"})
            seconds, report = drain(store, ChannelSet({"webhook": NoopChannel()}), 1000)
        elif case == "webhook":
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}/hook"
            fill(store, n, "webhook", {"url": url})
            with ChannelSet({"webhook": HttpChannel()}) as channels:
                seconds, report = drain(store, channels, 500)
            server.shutdown()
        else:
            from aiosmtpd.controller import Controller

            class Handler:
                async def handle_DATA(self, server, session, envelope):
                    return "250 OK"

            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            controller = Controller(Handler(), hostname="127.0.0.1", port=port)
            controller.start()
            fill(store, n, "email", {"creative": "winback"})
            with ChannelSet({"email": SmtpChannel("127.0.0.1", port)}) as channels:
                seconds, report = drain(store, channels, 500)
            controller.stop()
    return {
        "case": case,
        "backend": backend,
        "n": n,
        "seconds": round(seconds, 2),
        "per_second": round(n / seconds),
        "report": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="actions per case")
    parser.add_argument("--only", choices=["noop", "smtp", "webhook"], action="append")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    defaults = {"noop": 50_000, "smtp": 2_000, "webhook": 5_000}
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for case in args.only or ["noop", "smtp", "webhook"]:
            for backend in args.backend or ["sqlite", "postgresql"]:
                if case != "noop" and backend == "postgresql" and not args.backend:
                    continue  # channel rates do not depend on the database
                results.append(run(case, backend, args.n or defaults[case], Path(folder)))
                if not args.json:
                    r = results[-1]
                    print(
                        f"{r['case']:8} {r['backend']:10} {r['n']:>7} actions "
                        f"{r['seconds']:>7} s {r['per_second']:>7}/s  {r['report']['outcomes']}"
                    )
    if args.json:
        print(json.dumps({"machine": platform.machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
