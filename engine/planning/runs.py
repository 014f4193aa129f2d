"""The `runs` rows of planning: claiming a (rule, slot), finishing it, the watermark a
stage trigger reads from, missed schedule slots, and pruning runs that decided nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.planning.outcome import RuleOutcome
from engine.planning.spec import PlanSpec
from engine.store.planning import Decision, Run
from engine.store.sql import dialect_insert
from engine.triggers.base import TriggerContext
from engine.triggers.registry import missed_for

runs = Run.__table__
decisions = Decision.__table__


def record_missed(connection: Connection, spec: PlanSpec, tctx: TriggerContext, mode: str) -> int:
    """Record schedule slots older than misfire_grace as one `missed` run."""
    missed = missed_for(spec.trigger, tctx)
    if missed is None:
        return 0
    slot, counts = missed
    values = {
        "rule_id": spec.rule_id,
        "rule_hash": spec.rule_hash,
        "slot": slot,
        "at": tctx.at,
        "mode": mode,
        "status": "missed",
        "counts": counts,
        "started_at": tctx.at,
        "finished_at": tctx.at,
    }
    connection.execute(dialect_insert(connection, runs).values(**values).on_conflict_do_nothing())
    return int(counts["missed"])


def prune_runs(connection, *, before: datetime) -> int:
    """Delete runs older than `before` that decided nothing.

    Kept whatever their age: each rule's latest run (a schedule rule's last claimed
    slot) and the latest completed run of each rule content (a stage rule's watermark:
    without it the rule would sweep its whole stage again).
    """
    latest = sa.select(sa.func.max(runs.c.id)).group_by(runs.c.rule_id)
    watermarks = (
        sa.select(sa.func.max(runs.c.id))
        .where(runs.c.status == "done")
        .group_by(runs.c.rule_id, runs.c.rule_hash)
    )
    decided = sa.exists().where(decisions.c.run_id == runs.c.id)
    return connection.execute(
        runs.delete().where(
            runs.c.at < before,
            runs.c.status.in_(("done", "missed", "failed")),
            ~decided,
            runs.c.id.not_in(latest.scalar_subquery()),
            runs.c.id.not_in(watermarks.scalar_subquery()),
        )
    ).rowcount


def watermark(connection, spec: PlanSpec, at: datetime) -> datetime | None:
    """T of the latest completed evaluation before `at` of this exact rule content."""
    return connection.execute(
        sa.select(sa.func.max(runs.c.at)).where(
            runs.c.rule_id == spec.rule_id,
            runs.c.rule_hash == spec.rule_hash,
            runs.c.status == "done",
            runs.c.at < at,
        )
    ).scalar()


def claim_run(connection, spec: PlanSpec, at, slot, mode, user_id) -> int | None:
    """Insert the (rule, slot) run row; None if another evaluation already holds it."""
    if user_id is not None:
        # A one-user evaluation must not take the slot from the real sweep.
        slot = f"{slot}#user:{user_id}:{uuid.uuid4().hex[:8]}"
    values = {
        "rule_id": spec.rule_id,
        "rule_hash": spec.rule_hash,
        "slot": slot,
        "at": at,
        "mode": mode,
        "status": "running",
        "counts": {},
        "started_at": at,
    }
    statement = dialect_insert(connection, runs).values(**values).on_conflict_do_nothing()
    result = connection.execute(statement.returning(runs.c.id))
    return result.scalar()


def forget_run(connection, run_id: int) -> None:
    """Drop a claimed run that did nothing (an idle tick leaves no trace)."""
    connection.execute(runs.delete().where(runs.c.id == run_id))


def finish_run(connection, run_id: int, outcome: RuleOutcome) -> None:
    counts = outcome.as_dict()
    for key in ("rule", "status", "slot", "samples", "error", "duration_ms"):
        counts.pop(key)
    connection.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            status="done",
            counts=counts,
            finished_at=runs.c.started_at,
            duration_ms=outcome.duration_ms,
        )
    )
