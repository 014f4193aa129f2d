"""Planning one rule at T, set-based: occurrences -> ... -> decisions and outbox.

Steps, in order (each a column of one SQL query, never a Python loop over users; see
engine.planning.candidates): occurrences -> conditions (`when`) -> not already decided
-> `unless` -> consent -> re-eligibility (`every`) -> exclusive group -> per-rule caps
-> holdout -> variant. The result is materialised once into a temporary table
(engine.planning.scratch); counts, decisions and outbox rows are all read from it, in
the caller's transaction (engine.planning.writes). A dry-run is this same code
followed by a rollback (DESIGN invariant 3).

This module strings the steps together and decides when a steady tick can skip a
rule; the names other layers import from here (RuleOutcome, Sources, build_sources,
is_final, prune_runs, install_id, ...) are re-exported from the modules that own them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine import clock
from engine.config import Settings
from engine.planning.audience_exits import any_unqualified, remove_unqualified
from engine.planning.candidates import candidates, is_final, not_decided
from engine.planning.outcome import SAMPLE_SIZE, RuleOutcome, collect_samples
from engine.planning.runs import (
    claim_run,
    finish_run,
    forget_run,
    prune_runs,
    record_missed,
    watermark,
)
from engine.planning.scratch import (
    count_outcomes,
    drop_occurrences,
    materialize_occurrences,
    scratch_table,
)
from engine.planning.sources import ConditionCompiler, Sources, build_sources
from engine.planning.spec import PlanSpec
from engine.planning.statistics import collects_statistics, note_written, refresh_stale
from engine.planning.writes import install_id, plan_actions, record_decisions
from engine.store.planning import Decision, OutboxAction
from engine.triggers.base import TriggerContext
from engine.triggers.registry import occurrences_for, slot_for
from engine.triggers.schedule import slot_plan as schedule_plan

__all__ = [
    "SAMPLE_SIZE",
    "ConditionCompiler",
    "RuleOutcome",
    "Sources",
    "build_sources",
    "install_id",
    "is_final",
    "plan_rule",
    "prune_runs",
]

decisions = Decision.__table__
outbox = OutboxAction.__table__
# What a follow-up's occurrences and candidates read of the rows earlier rules of the
# evaluation wrote: the followed decisions, whether they reached the user, and the
# follow-up's own decisions.
FOLLOWED_COLUMNS = {
    decisions: ("rule_id", "user_id", "occurrence_key", "outcome", "occurred_at", "decided_at"),
    outbox: ("decision_id", "state", "channel"),
}


def plan_rule(
    connection: Connection,
    spec: PlanSpec,
    *,
    settings: Settings,
    at: datetime,
    compile_conditions: ConditionCompiler,
    superiors: Sequence[str] = (),
    user_id: str | None = None,
    mode: str = "run",
    changed_since: datetime | None = None,
) -> RuleOutcome:
    """Evaluate `spec` at `at` inside the caller's transaction; returns what it decided.

    `superiors` are the rules of the same exclusive group with a higher priority,
    already evaluated at this T. `user_id` restricts evaluation to one user
    (dry-run --user); such an evaluation claims no run slot.
    """
    started = clock.monotonic()
    outcome = RuleOutcome(rule_id=spec.rule_id, status="done")
    tctx = TriggerContext(
        connection=connection,
        settings=settings,
        at=at,
        # The same watermark for a one-user evaluation, so that explain and
        # `dry-run --user` say exactly what the sweep would do.
        watermark=watermark(connection, spec, at),
        rule_id=spec.rule_id,
        changed_since=changed_since,
    )
    if spec.status == "paused":
        outcome.status = "paused"
        return outcome
    if not spec.in_flight(at):
        outcome.status = "outside_flight"
        return outcome
    if user_id is None:
        outcome.missed = record_missed(connection, spec, tctx, mode)
    occurrences = occurrences_for(spec.trigger, tctx)
    if occurrences is None:
        outcome.status = "not_due"
        return outcome
    if changed_since is not None and _nothing_new(connection, spec, occurrences):
        # A steady tick with nothing new for this rule costs one indexed EXISTS (the
        # daemon's hourly full sweep still does everything). Rules with audiences
        # also check that no member stopped qualifying: those must leave the
        # audience at once, not at the next full sweep.
        if not _keeps_audience(spec):
            outcome.status = "idle"
            return outcome
        if user_id is None:
            sources = build_sources(connection, settings, at, spec.event_trigger)
            if not any_unqualified(connection, spec, sources, compile_conditions):
                outcome.status = "idle"
                return outcome
    outcome.slot = slot_for(spec.trigger, tctx)
    run_id = claim_run(connection, spec, at, outcome.slot, mode, user_id)
    if run_id is None:
        outcome.status = "already_claimed"
        return outcome
    outcome.run_id = run_id
    if connection.dialect.name == "postgresql":
        # The planner's statements are estimated costly (correlated EXISTS on tables
        # that grew since the last ANALYZE), which turns on JIT compilation: ~0.4 s per
        # statement that then runs in milliseconds. For this transaction only.
        connection.exec_driver_sql("SET LOCAL jit = off")

    sources = build_sources(connection, settings, at, spec.event_trigger)
    materialized = _materializes_occurrences(connection, spec)
    if materialized:
        refresh_stale(connection, FOLLOWED_COLUMNS)
        occ = materialize_occurrences(connection, occurrences).alias("occ")
    else:
        occ = occurrences.subquery("occ")
    candidate_rows = candidates(
        spec,
        sources,
        occ,
        compile_conditions,
        superiors,
        user_id,
        settings.rules.assignment_salt,
        connection.dialect.name,
    )
    scratch = scratch_table(connection)
    connection.execute(scratch.insert().from_select([c.name for c in scratch.c], candidate_rows))
    count_outcomes(connection, scratch, spec, outcome)
    record_decisions(connection, scratch, spec, run_id, at)
    # Follow-ups read these rows moments later (statistics.py).
    note_written(connection, decisions, outcome.matched)
    if spec.status == "active":
        outcome.actions = plan_actions(connection, spec, run_id, at)
        note_written(connection, outbox, sum(outcome.actions.values()))
        if user_id is None:
            outcome.audience_removed = remove_unqualified(
                connection, spec, sources, compile_conditions, at
            )
    outcome.samples = collect_samples(connection, run_id)
    scratch.drop(connection)
    if materialized:
        drop_occurrences(connection)
    outcome.duration_ms = int((clock.monotonic() - started) * 1000)
    if spec.trigger.kind == "schedule":
        outcome.coalesced = schedule_plan(spec.trigger, tctx).coalesced
    if _considered_nothing(connection, spec, outcome, occurrences):
        # An idle tick leaves no trace: `runs` holds evaluations that did something
        # (and every schedule slot, which is its own claim).
        forget_run(connection, run_id)
        outcome.run_id = None
        return outcome
    finish_run(connection, run_id, outcome)
    return outcome


def _materializes_occurrences(connection: Connection, spec: PlanSpec) -> bool:
    """Whether the occurrences go through a temporary table first (scratch.py says why).

    Follow-ups only: their occurrences are rows this evaluation may have just written,
    and they are few (a schedule's would be every user). Only where the planner keeps
    statistics for it (PostgreSQL); SQLite plans the inline query well.
    """
    return spec.trigger.kind == "after" and collects_statistics(connection)


def _keeps_audience(spec: PlanSpec) -> bool:
    return spec.status == "active" and any(
        action.kind == "audience" for plans in spec.actions.values() for action in plans
    )


def _nothing_new(connection, spec: PlanSpec, occurrences: sa.Select) -> bool:
    """Whether a steady tick can skip this rule: one indexed EXISTS.

    Event and after triggers re-read what changed within CHANGE_LAG (the daemon's
    safety margin), which is mostly occurrences already decided for good: those are
    filtered out by the very `not_decided` the candidate query applies, so a tick
    with only those is as idle as one with none (the full evaluation would match
    nothing and leave no run). A stage trigger's occurrences move its watermark even
    when decided, so they are counted as they are.
    """
    if spec.trigger.kind in ("event", "after"):
        occ = occurrences.subquery("occ")
        key = sa.literal("once", sa.String) if spec.once_per_user else occ.c.occurrence_key
        undecided = sa.select(occ.c.user_id).where(not_decided(spec, occ.c.user_id, key))
        return not connection.execute(sa.select(sa.exists(undecided))).scalar()
    return not connection.execute(sa.select(sa.exists(occurrences.subquery()))).scalar()


def _considered_nothing(connection, spec: PlanSpec, outcome: RuleOutcome, occurrences) -> bool:
    """Whether this evaluation is worth no run row.

    Event and after triggers re-read their look-back window every tick and skip what
    was decided: nothing matched means nothing new. A stage trigger reads the entries
    recorded since its watermark, which only a recorded run moves: keep the run if it
    saw any entry, matched or not, so that entry is not considered again.
    """
    if outcome.matched or outcome.audience_removed or spec.trigger.kind == "schedule":
        return False
    if spec.trigger.kind == "stage":
        return not connection.execute(sa.select(sa.exists(occurrences.subquery()))).scalar()
    return True
