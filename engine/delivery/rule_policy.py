"""The rule's own say at send time: `unless` re-checked, flight over.

Planning and sending can be hours apart (quiet hours, retries): a win-back email must
not go out after the user bought again, nor a campaign after its flight ended. The
exit conditions are evaluated for each sub-batch just before it is sent, in one query
per rule, against the store as of the delivery instant, for every trigger kind: the
decision keeps what its occurrence needs (trigger instant, triggering event).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

from engine.delivery.context import DeliveryContext, Outcome, PlannedAction
from engine.delivery.policy import DeliveryPolicy
from engine.store.planning import Decision, OutboxAction
from engine.store.sql import among

outbox = OutboxAction.__table__
decisions = Decision.__table__


class RulePolicy(DeliveryPolicy):
    """Skips an action whose rule says stop: reasons `unless` and `flight_over`.

    An action whose rule is not loadable now (invalid or deleted file) goes out as
    planned: a typo in a rule file must not drop what was already decided
    (DESIGN invariant 6).
    """

    name = "rule"

    def __init__(self, ruleset=None):
        # A RuleSet, or a callable returning one (the daemon's rules of its latest tick,
        # with the last good version of a broken file), or None: load the rule files.
        # Resolved once per policy instance, i.e. once per claimed batch.
        self._source = ruleset
        self._ruleset = None
        self._exits: dict[str, set[int]] = {}

    def _rules(self, ctx: DeliveryContext):
        if self._ruleset is None:
            if callable(self._source):
                self._ruleset = self._source()
            elif self._source is not None:
                self._ruleset = self._source
            else:
                self._ruleset = rule_files_ruleset(ctx.settings)
        return self._ruleset

    def before_batch(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        ruleset = self._rules(ctx)
        by_rule: dict[str, list[int]] = {}
        for action in actions:
            compiled = ruleset.rules.get(action.rule_id)
            if compiled is not None and compiled.spec.unless:
                by_rule.setdefault(action.rule_id, []).append(action.id)
        self._exits = {}
        if not by_rule:  # no rule of these actions has an `unless`: nothing to read
            return
        with ctx.store.read() as connection:
            for rule_id, outbox_ids in by_rule.items():
                compiled = ruleset.rules[rule_id]
                self._exits[rule_id] = _stopped(connection, ctx, compiled, outbox_ids)

    def check(self, ctx: DeliveryContext, action: PlannedAction) -> Outcome | None:
        ruleset = self._rules(ctx)
        compiled = ruleset.rules.get(action.rule_id)
        if compiled is None:
            return None
        if compiled.spec.flight_end is not None and ctx.now >= compiled.spec.flight_end:
            return Outcome.skipped("flight_over")
        if action.id in self._exits.get(action.rule_id, ()):
            return Outcome.skipped("unless")
        return None


# rules folder -> (settings, what its files held, the RuleSet compiled from them).
_LOADED: dict[Path, tuple[object, tuple, object]] = {}
_LOADED_LOCK = threading.Lock()


def rule_files_ruleset(settings):
    """The RuleSet of the rule files, compiled again only when a file changed.

    Every claimed batch asks; parsing and compiling every rule each time cost more than
    the batch's own queries. The files are compared by content, not by mtime (whose
    granularity could hide an edit saved twice within a tick), so an edit is seen by
    the next batch, exactly as when the files were loaded for each batch.
    """
    from engine.planning.compile import load_ruleset

    folder = settings.rules_dir
    contents = _rule_folder_contents(folder)
    with _LOADED_LOCK:
        cached = _LOADED.get(folder)
    if cached is not None and cached[0] is settings and cached[1] == contents:
        return cached[2]
    ruleset = load_ruleset(settings)
    with _LOADED_LOCK:
        _LOADED[folder] = (settings, contents, ruleset)
    return ruleset


def _rule_folder_contents(folder: Path) -> tuple:
    """(name, bytes) of every YAML file at the top of the rules folder (rules and
    segments: all that load_ruleset reads)."""
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
    except OSError:  # no rules folder (yet)
        return ()
    contents = []
    for path in paths:
        try:
            contents.append((path.name, path.read_bytes()))
        except OSError:  # a directory named *.yaml, or removed meanwhile
            contents.append((path.name, None))
    return tuple(contents)


def _stopped(connection, ctx: DeliveryContext, compiled, outbox_ids: list[int]) -> set[int]:
    """The outbox ids whose decision's occurrence now meets one of the rule's `unless`.

    Evaluated exactly as at planning, against the store as of the send instant, with
    what the decision remembered of its occurrence: the trigger instant (for
    `since="trigger"`) and, for event rules, the triggering event (for `event.*`).
    """
    from engine.planning.pipeline import build_sources

    spec = compiled.spec
    sources = build_sources(connection, ctx.settings, ctx.now, spec.event_trigger)
    o, d = outbox.alias("o"), decisions.alias("d")
    sources = replace(
        sources, trigger_at=sa.func.coalesce(d.c.trigger_at, d.c.occurred_at, d.c.decided_at)
    )
    u, p = sources.users, sources.profiles
    # Every join between per-user tables carries the user, so that on a store sharded
    # by user each one stays on its shard (docs/scaling.md).
    joined = (
        o.join(d, sa.and_(d.c.id == o.c.decision_id, d.c.user_id == o.c.user_id))
        .join(u, u.c.id == o.c.user_id)
        .outerjoin(p, p.c.user_id == u.c.id)
    )
    if sources.event is not None:
        # A decision from before the event was remembered has no event to read: its
        # row drops out here and it goes as planned.
        event = sources.event
        joined = joined.join(
            event, sa.and_(event.c.id == d.c.event_id, event.c.user_id == d.c.user_id)
        )
    unless = sa.or_(*(compiled.compile_conditions([e], sources) for e in spec.unless))
    query = sa.select(o.c.id).select_from(joined).where(among(o.c.id, sorted(outbox_ids)), unless)
    return set(connection.execute(query).scalars())
