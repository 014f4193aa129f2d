"""A steady tick finds a follow-up's due decisions by index ranges, not by reading
every decision the followed rule made in the last week.

At a million users the followed rule has made ~120,000 decisions in the look-back
week; the daemon asks "anything new?" every minute. The statements are checked through
SQLite's query plans, which do not depend on the table sizes (no statistics).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.daemon import RuleCache, tick
from engine.planning.runner import evaluate
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _shop(store, settings, folder) -> None:
    write_rule(
        settings, "cart-seen", "trigger: {event: add_to_cart}\nactions:\n  tag: {add: [c]}\n"
    )
    write_rule(
        settings,
        "reminder",
        "trigger: {after: cart-seen, wait: 1h}\nactions:\n  tag: {add: [r]}\n",
    )
    users = [{"id": f"u{n}"} for n in range(6)]
    carts = [
        {"user": f"u{n}", "type": "add_to_cart", "at": (T - n * 20 * MINUTE).isoformat()}
        for n in range(6)
    ]
    ingest(store, folder, now=T, users=users, events=carts)


def _plans_of(store, run) -> dict[str, list[str]]:
    """SQLite's query plan of every statement `run` executes."""
    plans: dict[str, list[str]] = {}

    def explain(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "WITH")):
            try:
                rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            except sqlite3.Error:  # e.g. a parameter the driver binds differently
                return
            plans[" ".join(statement.split())] = [row[3] for row in rows]

    sa.event.listen(store.engine, "before_cursor_execute", explain)
    try:
        run()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", explain)
    return plans


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_steady_tick_reads_the_followed_decisions_by_instant(store, settings, tmp_path):
    _shop(store, settings, tmp_path)
    first = evaluate(store, ruleset_for(settings), at=T, mode="run")
    # Carts an hour old or more are due at once.
    assert {o.rule_id: o.planned for o in first.outcomes} == {"cart-seen": 6, "reminder": 3}
    cache = RuleCache()
    at = T + 70 * MINUTE  # u0's reminder fell due 10 minutes ago

    ticks = []
    plans = _plans_of(
        store, lambda: ticks.append(tick(store, cache, at, changed_since=at - 15 * MINUTE))
    )

    assert {o.rule_id: o.planned for o in ticks[0].outcomes}["reminder"] == 1

    followed = [
        (statement, line)
        for statement, lines in plans.items()
        if "followed" in statement
        for line in lines
        if line.split()[1:2] == ["followed"]
    ]
    assert followed, "no statement read the followed decisions"
    # Each read of the followed decisions is one index range: those that fell due in
    # the last minutes, by their occurrence instant, and those decided since the
    # previous tick (late-loaded occurrences), by their decision instant. Never all of
    # the followed rule's decisions, nor its whole week.
    newly_due = "USING INDEX ix_decisions_rule_occurred (rule_id=? AND outcome=? AND occurred_at>?"
    newly_decided = "USING INDEX ix_decisions_rule_decided (rule_id=? AND decided_at>?)"
    reads = {
        "newly due" if newly_due in line else "newly decided" if newly_decided in line else line
        for _, line in followed
    }
    assert reads == {"newly due", "newly decided"}
