"""The claim: which due rows a dispatcher takes first, and what it reads to find them.

A claim takes the rows a crashed dispatcher left (lease run out) first, then the due
planned rows, highest priority first and the longest due first within a priority.
It reads only the rows it takes: a campaign that leaves a million rows due must not
make every batch sort the million (150-270 ms per claim of 500 at 400,000 due rows
when it did).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from delivery_helpers import T0, add_users, outbox_rows, plan

from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.claims import claim_batch
from engine.delivery.dispatcher import dispatch_once, dispatch_until_idle
from engine.store.types import UTCDateTime

MINUTE = timedelta(minutes=1)
HOOK = {"url": "https://example.com/h"}


def claim(store, *, now=T0, limit: int, worker: str = "w1#1") -> list[str]:
    with store.begin() as connection:
        actions = claim_batch(
            connection, now=now, worker_id=worker, lease_until=now + 5 * MINUTE, limit=limit
        )
    return [a.user_id for a in actions]


def test_highest_priority_first_then_the_longest_due(store):
    add_users(store, *({"id": name} for name in ("low", "mid-new", "mid-old", "top", "later")))
    plan(store, "webhook", "low", HOOK, priority=0, at=T0 - 30 * MINUTE)
    plan(store, "webhook", "mid-new", HOOK, priority=5, at=T0 - 1 * MINUTE)
    plan(store, "webhook", "mid-old", HOOK, priority=5, at=T0 - 20 * MINUTE)
    plan(store, "webhook", "top", HOOK, priority=9, at=T0)
    # Highest priority of all, but not due yet: it must not hold the others back.
    plan(store, "webhook", "later", HOOK, priority=50, at=T0 + MINUTE)

    assert claim(store, limit=2) == ["top", "mid-old"]
    assert claim(store, limit=2) == ["mid-new", "low"]
    assert claim(store, limit=2) == []
    assert claim(store, now=T0 + MINUTE, limit=3) == ["later"]


def test_rows_left_by_a_crashed_dispatcher_are_taken_over_first(store):
    """A row whose lease ran out was at the head of the queue when it was first
    claimed: it goes before rows planned since, whatever their priority."""
    add_users(store, {"id": "left"}, {"id": "urgent"})
    plan(store, "webhook", "left", HOOK, priority=0)
    assert claim(store, limit=10, worker="crashed#1") == ["left"]  # then the process dies
    plan(store, "webhook", "urgent", HOOK, priority=90)

    sink = NoopChannel()
    channels = ChannelSet({"webhook": sink})
    later = T0 + 6 * MINUTE  # the crashed claim's lease (5 minutes) has run out
    report = dispatch_once(store, now=later, worker_id="w2", channels=channels, batch_size=1)
    assert report.outcomes == {"sent": 1}
    assert [m.body["data"]["user_id"] for m in sink.sent] == ["left"]

    dispatch_until_idle(store, now=later, worker_id="w2", channels=channels)
    assert [m.body["data"]["user_id"] for m in sink.sent] == ["left", "urgent"]
    assert [(r["user_id"], r["state"], r["attempts"]) for r in outbox_rows(store)] == [
        ("left", "sent", 2),
        ("urgent", "sent", 1),
    ]


def _backlog(store, users: int) -> None:
    """`users` due rows over three priorities, a crashed claim, and not-due rows."""
    add_users(store, *({"id": f"u{i:05d}"} for i in range(users)))
    with store.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO outbox (idempotency_key, decision_id, run_id, rule_id, user_id,"
                " kind, channel, priority, payload, state, attempts, next_attempt_at,"
                " created_at, updated_at) VALUES (:key, :n, 1, 'r', :user, 'webhook',"
                " 'webhook', :priority, :payload, 'planned', 0, :due, :at, :at)"
            ).bindparams(
                sa.bindparam("due", type_=UTCDateTime()), sa.bindparam("at", type_=UTCDateTime())
            ),
            [
                {
                    "key": f"k{i}",
                    "n": i,
                    "user": f"u{i:05d}",
                    "priority": i % 3,
                    "payload": json.dumps(HOOK),
                    # A tenth not due for another hour.
                    "due": T0 + (60 if i % 10 == 0 else -(i % 60)) * MINUTE,
                    "at": T0 - 2 * timedelta(hours=1),
                }
                for i in range(users)
            ],
        )
        if store.engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE outbox")
    claim(store, now=T0 - 10 * MINUTE, limit=5, worker="crashed#1")


def _explained(store, run, explain: str) -> list[tuple[str, object]]:
    """(statement, plan) of every SELECT and UPDATE `run` executes, each explained just
    before it runs, on the statement's own connection and transaction (so against the
    same rows and locks): `explain` is the EXPLAIN prefix; on PostgreSQL the EXPLAIN
    ANALYZE runs in a savepoint that is rolled back."""
    explained = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            return
        raw = cursor.connection
        if store.engine.dialect.name == "postgresql":
            raw.execute("SAVEPOINT explained")
            plan = raw.execute(f"{explain} {statement}", parameters).fetchone()[0]
            raw.execute("ROLLBACK TO SAVEPOINT explained")
        else:
            plan = [row[3] for row in raw.execute(f"{explain} {statement}", parameters)]
        explained.append((" ".join(statement.split()), plan))

    sa.event.listen(store.engine, "before_cursor_execute", note)
    try:
        run()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", note)
    return explained


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_claim_reads_by_index_ranges_in_queue_order(store):
    """SQLite's query plans (they do not depend on table sizes): the planned rows are
    read as index ranges of one priority each, in queue order; the only sort is of
    the rows in flight (state `claimed`), to find those whose lease ran out."""
    _backlog(store, 300)
    explained = _explained(store, lambda: claim(store, limit=50), "EXPLAIN QUERY PLAN")
    planned = [plan for statement, plan in explained if "lease_until <" not in statement]
    taken_over = [plan for statement, plan in explained if "lease_until <" in statement]
    assert len(taken_over) == 1 and planned
    assert "SEARCH outbox USING INDEX ix_outbox_claim (state=?)" in taken_over[0]
    lines = [line for plan in planned for line in plan]
    assert not [line for line in lines if "TEMP B-TREE" in line], lines
    level = "USING COVERING INDEX ix_outbox_claim (state=? AND priority=? AND next_attempt_at<?)"
    assert f"SEARCH outbox {level}" in lines


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_claim_reads_only_the_rows_it_takes(store):
    """PostgreSQL, with the statistics of a 3,000-row backlog: the statements of a claim
    of 50, each run first under EXPLAIN ANALYZE, read each row they take about twice
    (in the index range, then by primary key) and a row per priority seek: never the
    backlog."""
    _backlog(store, 3000)
    taken = []
    explained = _explained(
        store, lambda: taken.extend(claim(store, limit=50)), "EXPLAIN (ANALYZE, FORMAT JSON)"
    )
    assert len(taken) == 50
    read = sum(_rows_read(plan[0]["Plan"]) for _statement, plan in explained)
    assert 50 <= read <= 2 * 50 + 10, read


def _rows_read(node: dict) -> int:
    """Rows the scans of outbox in a plan produced (each loop counted)."""
    own = 0
    if node.get("Relation Name") == "outbox" and "Scan" in node["Node Type"]:
        own = node["Actual Rows"] * node["Actual Loops"]
    return own + sum(_rows_read(child) for child in node.get("Plans", []))
