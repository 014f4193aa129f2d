"""PostgreSQL's planner statistics keep up with what planning itself writes
(engine/planning/statistics.py): when a follow-up reads the many decisions and outbox
rows a sweep has just written, their statistics describe them; and a statistics
refresh is never waited for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.planning import statistics
from engine.planning.runner import evaluate
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
USERS = statistics.MIN_ROWS + 200
SWEEP = """\
trigger: {schedule: "* * * * *"}
actions:
  tag: {add: [swept]}
"""
FOLLOW_UP = """\
trigger: {after: sweep, wait: 1m}
actions:
  tag: {add: [followed]}
"""
postgres_only = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def _shop(store, settings, tmp_path) -> None:
    ingest(
        store,
        tmp_path,
        now=T - timedelta(days=1),
        users=[{"id": f"u{n:05d}"} for n in range(USERS)],
    )
    write_rule(settings, "sweep", SWEEP)
    write_rule(settings, "follow-up", FOLLOW_UP)


def _described_rows(store, table: str) -> float:
    """How many rows the planner's statistics of `table` describe (-1: none; the tests'
    tables are truncated before each test, which forgets them)."""
    with store.connect() as connection:
        return connection.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)"),
            {"table": table},
        ).scalar_one()


@postgres_only
def test_a_follow_up_reads_a_large_sweep_with_statistics_that_describe_it(
    store, settings, tmp_path
):
    _shop(store, settings, tmp_path)
    evaluation = evaluate(store, ruleset_for(settings), at=T)
    outcomes = {o.rule_id: o for o in evaluation.outcomes}
    assert outcomes["sweep"].planned == USERS

    assert _described_rows(store, "decisions") >= USERS
    assert _described_rows(store, "outbox") >= USERS
    # ... and the follow-up, planned from them a minute later, follows every one.
    later = evaluate(store, ruleset_for(settings), at=T + timedelta(minutes=1))
    assert {o.rule_id: o for o in later.outcomes}["follow-up"].planned == USERS


@postgres_only
def test_a_statistics_refresh_is_never_waited_for(store, settings, tmp_path):
    _shop(store, settings, tmp_path)
    # Another session (autovacuum, another daemon analysing) holds the lock ANALYZE
    # needs, and keeps it for the whole evaluation.
    holder = sa.create_engine(store.engine.url, poolclass=sa.NullPool)
    with holder.connect() as other:
        other.exec_driver_sql("LOCK TABLE decisions IN SHARE UPDATE EXCLUSIVE MODE")
        evaluation = evaluate(store, ruleset_for(settings), at=T)
        other.rollback()
    holder.dispose()

    assert not evaluation.failed, [o.error for o in evaluation.outcomes]
    assert {o.rule_id: o for o in evaluation.outcomes}["sweep"].planned == USERS
    assert _described_rows(store, "decisions") < USERS  # skipped, not waited for
    assert _described_rows(store, "outbox") >= USERS


def _estimated_rows(store, rule_id: str) -> int:
    """What the planner expects `decisions WHERE rule_id = :rule_id` to return."""
    with store.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) SELECT id FROM decisions WHERE rule_id = %(rule)s",
            {"rule": rule_id},
        ).scalar_one()
    return plan[0]["Plan"]["Plan Rows"]


@postgres_only
def test_the_next_ticks_are_planned_with_the_rows_an_evaluation_wrote(store, settings, tmp_path):
    """The follow-up writes its many decisions after everything it read was analysed:
    statistics that never saw its rule estimate them at one row, and the next ticks'
    checks of its occurrences against them were planned as a nested loop over all."""
    _shop(store, settings, tmp_path)
    evaluate(store, ruleset_for(settings), at=T)
    later = evaluate(store, ruleset_for(settings), at=T + timedelta(minutes=1))
    assert {o.rule_id: o for o in later.outcomes}["follow-up"].planned == USERS

    assert _estimated_rows(store, "follow-up") >= USERS / 2
