"""The rule's own say at send time: `unless` re-checked, flight over.

Planning and sending can be hours apart (quiet hours, retries): a win-back email must
not go out after the user bought again, nor a campaign after its flight ended. The
exit conditions are evaluated for the whole batch in one query per rule, against
the store as of the delivery instant.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from engine.delivery.context import DeliveryContext, Outcome, PlannedAction
from engine.delivery.policy import DeliveryPolicy


class RulePolicy(DeliveryPolicy):
    """Skips an action whose rule says stop: reasons `unless` and `flight_over`.

    An action whose rule is not loadable now (invalid or deleted file) goes out as
    planned: a typo in a rule file must not drop what was already decided
    (DESIGN invariant 6).
    """

    name = "rule"

    def __init__(self, ruleset=None):
        self._ruleset = ruleset
        self._exits: dict[str, set[str]] = {}

    def _rules(self, ctx: DeliveryContext):
        if self._ruleset is None:
            from engine.planning.compile import load_ruleset

            self._ruleset = load_ruleset(ctx.settings)
        return self._ruleset

    def before_batch(self, ctx: DeliveryContext, actions: Sequence[PlannedAction]) -> None:
        from engine.planning.pipeline import build_sources

        ruleset = self._rules(ctx)
        by_rule: dict[str, set[str]] = {}
        for action in actions:
            by_rule.setdefault(action.rule_id, set()).add(action.user_id)
        self._exits = {}
        with ctx.store.connect() as connection:
            for rule_id, user_ids in by_rule.items():
                compiled = ruleset.rules.get(rule_id)
                # Event fields need the triggering event, which is not at hand here.
                if compiled is None or not compiled.spec.unless or compiled.spec.event_trigger:
                    continue
                sources = build_sources(connection, ctx.settings, ctx.now, False)
                u, p = sources.users, sources.profiles
                hits = connection.execute(
                    sa.select(u.c.id)
                    .select_from(u.outerjoin(p, p.c.user_id == u.c.id))
                    .where(
                        u.c.id.in_(sorted(user_ids)),
                        sa.or_(
                            *(
                                compiled.compile_conditions([e], sources)
                                for e in compiled.spec.unless
                            )
                        ),
                    )
                ).scalars()
                self._exits[rule_id] = set(hits)

    def check(self, ctx: DeliveryContext, action: PlannedAction) -> Outcome | None:
        ruleset = self._rules(ctx)
        compiled = ruleset.rules.get(action.rule_id)
        if compiled is None:
            return None
        if compiled.spec.flight_end is not None and ctx.now >= compiled.spec.flight_end:
            return Outcome.skipped("flight_over")
        if action.user_id in self._exits.get(action.rule_id, ()):
            return Outcome.skipped("unless")
        return None
