"""A rule that fails while it is planned (here its decisions are refused by the
database) leaves a `failed` run with the error and nothing else it wrote; the other
rules of the evaluation are planned as usual."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from engine.planning.runner import evaluate
from engine.store.planning import Decision, Run
from tests.planning.helpers import ingest, ruleset_for, write_rule

AT = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
RULE = "trigger: {event: purchase}\nactions:\n  tag: {add: [seen]}\n"

SQLITE_REFUSAL = """
CREATE TRIGGER refuse_broken BEFORE INSERT ON decisions
WHEN NEW.rule_id = 'broken' BEGIN SELECT RAISE(ABORT, 'decisions of broken refused'); END
"""
POSTGRES_REFUSAL = [
    """
    CREATE FUNCTION refuse_broken() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.rule_id = 'broken' THEN RAISE EXCEPTION 'decisions of broken refused'; END IF;
      RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER refuse_broken BEFORE INSERT ON decisions "
    "FOR EACH ROW EXECUTE FUNCTION refuse_broken()",
]
POSTGRES_CLEAN_UP = [
    "DROP TRIGGER IF EXISTS refuse_broken ON decisions",
    "DROP FUNCTION IF EXISTS refuse_broken()",
]


def test_a_failing_rule_leaves_a_failed_run_and_the_others_are_planned(store, settings, tmp_path):
    for name in ("before", "broken", "after"):
        write_rule(settings, name, RULE)
    ingest(
        store,
        tmp_path,
        now=AT,
        users=[{"id": "a"}],
        events=[{"user": "a", "type": "purchase", "at": AT.isoformat(), "amount": 5}],
    )
    postgres = store.dialect == "postgresql"
    with store.begin() as connection:
        for statement in POSTGRES_REFUSAL if postgres else [SQLITE_REFUSAL]:
            connection.exec_driver_sql(statement)
    try:
        evaluation = evaluate(store, ruleset_for(settings), at=AT)
    finally:
        if postgres:
            with store.begin() as connection:
                for statement in POSTGRES_CLEAN_UP:
                    connection.exec_driver_sql(statement)

    outcomes = {o.rule_id: o for o in evaluation.outcomes}
    assert {rule: o.status for rule, o in outcomes.items()} == {
        "before": "done",
        "broken": "failed",
        "after": "done",
    }
    assert "decisions of broken refused" in outcomes["broken"].error
    runs, decisions = Run.__table__, Decision.__table__
    with store.read() as connection:
        statuses = dict(connection.execute(sa.select(runs.c.rule_id, runs.c.status)).all())
        error = connection.execute(
            sa.select(runs.c.error).where(runs.c.rule_id == "broken")
        ).scalar_one()
        decided = connection.execute(
            sa.select(decisions.c.rule_id).order_by(decisions.c.rule_id)
        ).scalars()
        decided = list(decided)
    assert statuses == {"before": "done", "broken": "failed", "after": "done"}
    assert "decisions of broken refused" in error
    assert decided == ["after", "before"]
