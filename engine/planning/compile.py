"""Loaded rules -> a RuleSet ready to plan: conditions checked and compiled, specs built.

Errors are collected, never raised: an invalid rule is reported with file:line:col
and left out, every other rule stays (DESIGN invariant 6).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from engine.action_kinds import get_action_kind
from engine.config import Settings
from engine.errors import Diagnostic
from engine.planning.sources import Sources
from engine.planning.spec import ActionPlan, PlanSpec
from engine.triggers.base import TriggerSpec


@dataclass
class CompiledRule:
    rule: object  # engine.rules.models.Rule
    spec: PlanSpec
    segments: dict = field(default_factory=dict)

    def compile_conditions(self, expressions: Sequence[object], sources: Sources):
        """All `expressions` ANDed, as one two-valued SQL predicate."""
        from engine.conditions import compile_condition

        context = _context(sources, self.segments)
        return sa.and_(sa.true(), *(compile_condition(e, context) for e in expressions))

    def explain_columns(self, sources: Sources):
        """[(part, ExplainColumn)] for every clause of `when`, then of `unless`."""
        from engine.conditions import compile_explain

        context = _context(sources, self.segments)
        columns = []
        for part, expressions in (("when", self.spec.when), ("unless", self.spec.unless)):
            for index, expression in enumerate(expressions):
                for column in compile_explain(expression, context):
                    columns.append((f"{part}.{index}", column))
        return columns


@dataclass
class RuleSet:
    rules: dict[str, CompiledRule] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    # Broken on disk, still running their last good version (the daemon's cache).
    kept_last_good: set[str] = field(default_factory=set)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def describe_missing(self, rule_id: str) -> str:
        if rule_id in self.broken:
            return f"rule {rule_id!r} is invalid and was skipped: run `nudge check`"
        close = difflib.get_close_matches(rule_id, list(self.rules), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"no rule {rule_id!r}{hint}"


def _context(sources: Sources, segments):
    from engine.conditions import CompileContext

    return CompileContext(
        now=sources.at,
        users=sources.users,
        profiles=sources.profiles,
        stage=sources.stage,
        event=sources.event,
        segments=segments,
        trigger_at=sources.trigger_at,
    )


def load_ruleset(settings: Settings) -> RuleSet:
    """Load rules/ and compile every valid rule; collect every problem."""
    from engine.rules import load_rules

    loaded = load_rules(settings.rules_dir)
    return compile_ruleset(settings, loaded)


def compile_ruleset(settings: Settings, loaded) -> RuleSet:
    from engine.conditions import Catalog

    ruleset = RuleSet(diagnostics=list(loaded.diagnostics), broken=set(loaded.broken))
    rule_ids = frozenset(loaded.rules) | frozenset(loaded.broken)
    segments, segment_errors = _check_segments(loaded.segments)
    ruleset.diagnostics += segment_errors
    for rule_id, rule in sorted(loaded.rules.items()):
        catalog = Catalog.for_trigger(rule.trigger.kind, segments=segments, rule_ids=rule_ids)
        problems: list[Diagnostic] = []
        when = _check_all(rule.when, catalog, problems)
        unless = _check_all(rule.unless, catalog, problems)
        if rule.trigger.where is not None:
            when = _check_all([rule.trigger.where], catalog, problems) + when
        if problems:
            ruleset.diagnostics += problems
            ruleset.broken.add(rule_id)
            continue
        spec = build_spec(settings, rule, tuple(when), tuple(unless))
        ruleset.rules[rule_id] = CompiledRule(rule=rule, spec=spec, segments=segments)
    ruleset.diagnostics += _group_ties(ruleset)
    return ruleset


def _check_segments(located: dict) -> tuple[dict, list[Diagnostic]]:
    """The healthy segments, checked, and one diagnostic per broken one.

    A broken segment is left out and the rest checked again (a segment using it breaks
    in turn), so one typo in segments.yaml stops only the rules that use it, not
    every rule that uses any segment.
    """
    from engine.conditions import ConditionError, check_segments

    remaining = dict(located)
    problems: list[Diagnostic] = []
    for _ in range(len(located)):
        if not remaining:
            break
        try:
            return check_segments({n: text.text for n, text in remaining.items()}), problems
        except ConditionError as exc:
            text = remaining.pop(exc.segment, None) if exc.segment else None
            if text is None:
                problems.append(Diagnostic(_first_location(located), exc.message))
                return {}, problems
            problems.append(_condition_diagnostic(text, exc))
    return {}, problems


def _first_location(located: dict):
    return next(iter(located.values())).location


def _check_all(texts, catalog, problems: list[Diagnostic]) -> list:
    from engine.conditions import ConditionError, check_condition

    checked = []
    for text in texts:
        try:
            checked.append(check_condition(text.text, catalog=catalog))
        except ConditionError as exc:
            problems.append(_condition_diagnostic(text, exc))
    return checked


def _condition_diagnostic(text, exc) -> Diagnostic:
    return text.diagnostic(exc.message, exc.offset)


def build_spec(settings: Settings, rule, when: tuple, unless: tuple) -> PlanSpec:
    trigger = rule.trigger
    experiment = rule.experiment
    variants = {name: v.weight for name, v in experiment.variants.items()} if experiment else {}
    actions: dict[str | None, tuple[ActionPlan, ...]] = {}
    for variant in list(variants) or [None]:
        plans = []
        for kind_name, params in rule.actions_for(variant).items():
            kind = get_action_kind(kind_name)
            dumped = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
            plans.append(ActionPlan(kind=kind_name, channel=kind.channel, params=dumped))
        actions[variant] = tuple(plans)
    start, end = rule.flight.bounds(settings.tz) if rule.flight else (None, None)
    cap = rule.caps.per_user if rule.caps else None
    return PlanSpec(
        rule_id=rule.id,
        rule_hash=rule.content_hash,
        trigger=TriggerSpec(kind=trigger.kind, value=trigger.value, wait=trigger.wait),
        status=rule.status,
        when=when,
        unless=unless,
        once_per_user=rule.once == "per_user",
        every=rule.every,
        flight_start=start,
        flight_end=end,
        priority=rule.priority,
        exclusive_group=rule.exclusive_group,
        cap_max=cap.max if cap else None,
        cap_per=cap.per if cap else None,
        holdout=experiment.holdout if experiment else 0.0,
        variants=variants,
        actions=actions,
        send_window=tuple(rule.send_window.between) if rule.send_window else None,
        event_trigger=trigger.kind == "event",
    )


def _group_ties(ruleset: RuleSet) -> list[Diagnostic]:
    """Two rules of one exclusive group with the same priority: who wins is undefined."""
    seen: dict[tuple[str, int], str] = {}
    problems = []
    for rule_id, compiled in sorted(ruleset.rules.items()):
        spec = compiled.spec
        if spec.exclusive_group is None:
            continue
        key = (spec.exclusive_group, spec.priority)
        if key in seen:
            problems.append(
                compiled.rule.diagnostic(
                    "priority",
                    f"rules {seen[key]!r} and {rule_id!r} are both in exclusive group "
                    f"{spec.exclusive_group!r} with priority {spec.priority}: give one a "
                    "higher priority so the winner is defined",
                )
            )
        else:
            seen[key] = rule_id
    return problems
