"""Imports running at once on PostgreSQL: users files and events files sharing users.

Two shops' cron jobs (or an operator and a cron job) may import at the same time: a
users file upserting thousands of users while an events file creates the users it
meets. Each locks user rows; taken in different orders, PostgreSQL found them
deadlocked and aborted one import (`DeadlockDetected` on `INSERT INTO users`). Here
four imports run at once, over the same users in shuffled orders, several times: none
fails, and the store holds every row once.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.ingest import ingest_files

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)

NOW = datetime(2026, 11, 30, tzinfo=UTC)
USERS = 3000
ROUNDS = 6


def _users_file(path, draw: random.Random, round_: int) -> None:
    ids = list(range(USERS))
    draw.shuffle(ids)
    with open(path, "w") as out:
        for i in ids:
            user = {"id": f"u{i}", "email": f"u{i}@example.com", "name": f"User {round_}-{i}"}
            out.write(json.dumps(user) + "\n")


def _events_file(path, draw: random.Random, tag: str, count: int) -> None:
    with open(path, "w") as out:
        for n in range(count):
            event = {
                "event_id": f"{tag}-{n}",
                "user_id": f"u{draw.randrange(USERS * 2)}",  # half of them unknown: created
                "type": "visit",
                "occurred_at": (NOW - timedelta(minutes=draw.randrange(50_000))).isoformat(),
            }
            out.write(json.dumps(event) + "\n")


def test_users_and_events_imported_at_once_never_deadlock(store, tmp_path):
    draw = random.Random(12)
    errors: list[BaseException] = []
    events_written = 0
    for round_ in range(ROUNDS):
        paths = []
        for k in range(2):
            path = tmp_path / f"users-{round_}-{k}.jsonl"
            _users_file(path, draw, round_)
            paths.append(path)
            path = tmp_path / f"events-{round_}-{k}.jsonl"
            _events_file(path, draw, f"{round_}-{k}", 4000)
            events_written += 4000
            paths.append(path)

        def run(path, at=NOW + timedelta(minutes=round_)):
            try:
                ingest_files(store, [path], now=at)
            except BaseException as exc:  # collected: the assertion names them all
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(path,)) for path in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, [f"{type(e).__name__}: {str(e)[:200]}" for e in errors]

    with store.connect() as connection:
        stored_events = connection.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
        user_ids = connection.exec_driver_sql("SELECT count(*) FROM users").scalar_one()
        last_names = connection.execute(
            sa.text("SELECT count(*) FROM users WHERE name LIKE :name"),
            {"name": f"User {ROUNDS - 1}-%"},
        ).scalar_one()
    assert stored_events == events_written
    assert user_ids >= USERS  # every named user, and the unknown ids the events created
    assert last_names == USERS  # each named user's last upsert is the last round's
