"""Evaluate rules at T: refresh stages, then plan each rule in a stable order.

A real evaluation commits each rule in its own transaction, so one failing rule
never stops the others (invariant 6) and a crash loses at most the rule in flight.
A dry-run runs the very same steps in one transaction with a savepoint per rule and
rolls everything back at the end (invariant 3), so it writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine import clock
from engine.errors import Diagnostic, NotFoundError
from engine.planning.compile import CompiledRule, RuleSet
from engine.planning.outcome import RuleOutcome
from engine.planning.pipeline import FOLLOWED_COLUMNS, plan_rule
from engine.planning.statistics import refresh_stale
from engine.store import Store
from engine.store.people import StageMembership


@dataclass
class Evaluation:
    at: datetime
    dry_run: bool
    outcomes: list[RuleOutcome] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    stage_entries: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(outcome.status == "failed" for outcome in self.outcomes)

    def as_dict(self) -> dict:
        return {
            "at": self.at.isoformat(),
            "dry_run": self.dry_run,
            "stage_entries": self.stage_entries,
            "rules": [outcome.as_dict() for outcome in self.outcomes],
            "diagnostics": [d.as_dict() for d in self.diagnostics],
        }


def evaluation_order(rules: Iterable[CompiledRule]) -> list[CompiledRule]:
    """Followed rules before their follow-ups, and inside an exclusive group the higher
    priorities first (a lower rule must see what a higher one decided in this run).

    A topological order of both kinds of edge; among rules free to go, the highest
    priority first, then by id. A cycle (a follow-up that outranks the rule it follows
    in one group) keeps the follow-up edge: data must exist before it is followed.
    """
    by_id = {rule.spec.rule_id: rule for rule in rules}
    before: dict[str, set[str]] = {rule_id: set() for rule_id in by_id}
    for rule_id, rule in by_id.items():
        spec = rule.spec
        if spec.trigger.kind == "after" and spec.trigger.value in by_id:
            before[rule_id].add(spec.trigger.value)
    for rule_id, rule in by_id.items():
        for superior in superiors_of(rule, by_id.values()):
            if not _reaches(before, superior, rule_id):  # never close a cycle
                before[rule_id].add(superior)
    order: list[CompiledRule] = []
    done: set[str] = set()
    while len(order) < len(by_id):
        free = [r for r in by_id if r not in done and before[r] <= done]
        if not free:  # only a cycle of follow-ups is left: the old depth order
            free = [r for r in by_id if r not in done]
        chosen = min(free, key=lambda r: (-by_id[r].spec.priority, r))
        order.append(by_id[chosen])
        done.add(chosen)
    return order


def _reaches(before: dict[str, set[str]], start: str, target: str) -> bool:
    """Whether `start` must already come after `target` (a path start -> ... -> target)."""
    stack, seen = [start], set()
    while stack:
        node = stack.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(before.get(node, ()))
    return False


def superiors_of(rule: CompiledRule, rules: Iterable[CompiledRule]) -> tuple[str, ...]:
    """The live rules of the same exclusive group with a higher priority.

    Shadow and paused rules deliver nothing, so they never take a user from a live one
    (their held-out users are not anyone's control group).
    """
    group = rule.spec.exclusive_group
    if group is None:
        return ()
    return tuple(
        other.spec.rule_id
        for other in rules
        if other.spec.exclusive_group == group
        and other.spec.priority > rule.spec.priority
        and other.spec.status == "active"
    )


def select_rules(ruleset: RuleSet, rule_ids: list[str] | None) -> list[CompiledRule]:
    if not rule_ids:
        return list(ruleset.rules.values())
    chosen = []
    for rule_id in rule_ids:
        if rule_id not in ruleset.rules:
            raise NotFoundError(ruleset.describe_missing(rule_id))
        chosen.append(ruleset.rules[rule_id])
    return chosen


def evaluate(
    store: Store,
    ruleset: RuleSet,
    *,
    at: datetime,
    rule_ids: list[str] | None = None,
    user_id: str | None = None,
    dry_run: bool = False,
    mode: str = "run",
    changed_since: datetime | None = None,
    on_rule_done: Callable[[int], None] | None = None,
) -> Evaluation:
    """Plan the chosen rules at `at` (all valid rules when none are named).

    `changed_since` narrows event and after triggers to what changed since then (the
    daemon's steady ticks); None reads their whole look-back window. `on_rule_done(1)`
    is called after each rule (the CLI's progress bar).
    """
    advance = on_rule_done or (lambda n: None)
    result = Evaluation(at=at, dry_run=dry_run, diagnostics=list(ruleset.diagnostics))
    chosen = evaluation_order(select_rules(ruleset, rule_ids))
    if user_id is not None:
        _require_user(store, user_id)
    if dry_run:
        with store.connect() as connection:
            transaction = connection.begin()
            try:
                result.stage_entries = refresh_stages_up_to(connection, store, at)
                for rule in chosen:
                    result.outcomes.append(
                        _plan_in_savepoint(
                            connection, rule, chosen, store, at, user_id, mode, changed_since
                        )
                    )
                    advance(1)
            finally:
                transaction.rollback()
        return result
    with store.begin() as connection:
        result.stage_entries = refresh_stages_up_to(
            connection, store, at, steady=changed_since is not None
        )
    # One connection, one transaction per rule: a failure stays with its rule, and the
    # rules share the connection (reconnecting per rule dominated an idle tick).
    with store.connect() as connection:
        for rule in chosen:
            result.outcomes.append(
                _plan_in_transaction(
                    connection, rule, chosen, store, at, user_id, mode, changed_since
                )
            )
            advance(1)
        with connection.begin():
            refresh_stale(connection, FOLLOWED_COLUMNS, fraction=0.0)  # statistics.py
    return result


def _plan_in_savepoint(
    connection, rule, chosen, store, at, user_id, mode, changed_since
) -> RuleOutcome:
    """Dry-run: plan one rule inside a savepoint of the dry-run's transaction (which
    holds every rule and is rolled back); a failure is rolled back to the savepoint and
    reported, not recorded, and the other rules go on."""
    started = clock.monotonic()
    savepoint = connection.begin_nested()
    try:
        outcome = _plan(connection, rule, chosen, store, at, user_id, mode, True, changed_since)
    except Exception as exc:  # noqa: BLE001 - one failing rule never stops the others
        savepoint.rollback()
        return _failed(rule, exc, started)
    savepoint.commit()
    return outcome


def _plan_in_transaction(
    connection, rule, chosen, store, at, user_id, mode, changed_since
) -> RuleOutcome:
    """Plan one rule in a transaction of its own; if it fails, that transaction is
    rolled back and the failure recorded in another, and the other rules go on. (No
    savepoint: on PostgreSQL its SAVEPOINT and RELEASE were two of an idle tick's ~50
    round trips per rule.)"""
    started = clock.monotonic()
    try:
        with connection.begin():
            return _plan(connection, rule, chosen, store, at, user_id, mode, False, changed_since)
    except Exception as exc:  # noqa: BLE001 - one failing rule never stops the others
        outcome = _failed(rule, exc, started)
        if user_id is None:
            with connection.begin():
                _record_failure(connection, rule.spec, at, mode, outcome)
        return outcome


def _plan(connection, rule, chosen, store, at, user_id, mode, dry_run, changed_since):
    return plan_rule(
        connection,
        rule.spec,
        settings=store.settings,
        at=at,
        compile_conditions=rule.compile_conditions,
        superiors=superiors_of(rule, chosen),
        user_id=user_id,
        mode="dry-run" if dry_run else mode,
        changed_since=changed_since,
    )


def _failed(rule, exc: Exception, started: float) -> RuleOutcome:
    cause = getattr(exc, "orig", None) or exc
    outcome = RuleOutcome(rule_id=rule.spec.rule_id, status="failed")
    outcome.error = f"{type(cause).__name__}: {cause}".splitlines()[0]
    outcome.duration_ms = int((clock.monotonic() - started) * 1000)
    return outcome


def _record_failure(connection, spec, at: datetime, mode: str, outcome: RuleOutcome) -> None:
    """A failed evaluation leaves a `failed` run with its error, for `nudge status`."""
    from engine.store.planning import Run
    from engine.store.sql import dialect_insert

    runs = Run.__table__
    values = {
        "rule_id": spec.rule_id,
        "rule_hash": spec.rule_hash,
        "slot": f"failed:{at.isoformat(timespec='seconds')}",
        "at": at,
        "mode": mode,
        "status": "failed",
        "counts": {},
        "error": outcome.error,
        "started_at": at,
        "finished_at": at,
        "duration_ms": outcome.duration_ms,
    }
    connection.execute(dialect_insert(connection, runs).values(**values).on_conflict_do_nothing())


def refresh_stages_up_to(
    connection: Connection, store: Store, at: datetime, *, steady: bool = False
) -> dict[str, int]:
    """Record stage entries up to T, unless the history already goes past T.

    Rewriting history for an evaluation in the past would make the stage trigger fire
    on entries that never happened; the past is read from the recorded memberships.
    `steady` (a daemon's steady tick) lets a refresh with provably nothing to record
    return at once (engine.lifecycle.refresh_stages).
    """
    from engine.lifecycle import refresh_stages, stages_unchanged

    if steady and stages_unchanged(connection, store.settings, at):
        return {}
    memberships = StageMembership.__table__
    latest = connection.execute(sa.select(sa.func.max(memberships.c.recorded_at))).scalar()
    if latest is not None and latest > at:
        return {}
    refreshed = refresh_stages(connection, store.settings, at, steady=steady)
    return dict(refreshed.entered)


def _require_user(store: Store, user_id: str) -> None:
    from engine.store.people import User

    users = User.__table__
    with store.read() as connection:
        found = connection.execute(sa.select(users.c.id).where(users.c.id == user_id)).first()
    if found is None:
        raise NotFoundError(f"no user {user_id!r} in the store")
