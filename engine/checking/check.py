"""`nudge check`: every rule, segment and creative, all problems at once.

Errors make the exit code 1; warnings (a rule that matches nobody in the current
store) do not. Every diagnostic names file:line:col.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from engine import clock
from engine.config import Settings
from engine.errors import Diagnostic, NudgeError
from engine.planning.compile import RuleSet, load_ruleset


@dataclass
class CheckReport:
    rules: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    schedules: dict[str, list[datetime]] = field(default_factory=dict)
    creatives_checked: int = 0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def summary(self) -> str:
        return (
            f"{len(self.rules)} rules valid, {len(self.errors)} errors, "
            f"{len(self.warnings)} warnings"
        )

    def as_dict(self) -> dict:
        return {
            "ok": not self.errors,
            "rules": self.rules,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "diagnostics": [d.as_dict() for d in self.diagnostics],
            "schedules": {k: [t.isoformat() for t in v] for k, v in self.schedules.items()},
        }


def check_project(settings: Settings, *, use_store: bool = True, now: datetime | None = None):
    now = now or clock.utcnow()
    ruleset = load_ruleset(settings)
    report = CheckReport(rules=sorted(ruleset.rules), diagnostics=list(ruleset.diagnostics))
    report.schedules = _schedules(settings, ruleset, now)
    report.diagnostics += _flights_over(ruleset, now)
    report.diagnostics += _creatives(settings, ruleset)
    if use_store:
        report.diagnostics += _matches_nobody(settings, ruleset, now)
    return report


def _schedules(settings: Settings, ruleset: RuleSet, now: datetime) -> dict[str, list[datetime]]:
    from engine.triggers.schedule import next_fire_times

    schedules = {}
    for rule_id, compiled in sorted(ruleset.rules.items()):
        spec = compiled.spec
        if spec.trigger.kind != "schedule":
            continue
        start = max(now, spec.flight_start) if spec.flight_start else now
        times = next_fire_times(spec.trigger.value, settings.tz, start, 3)
        # Fire times outside the flight plan nothing: list only those that can act.
        schedules[rule_id] = [t for t in times if spec.in_flight(t)]
    return schedules


def _flights_over(ruleset: RuleSet, now: datetime) -> list[Diagnostic]:
    """A rule whose flight has ended can never act again: say so."""
    found = []
    for rule_id, compiled in sorted(ruleset.rules.items()):
        end = compiled.spec.flight_end
        if end is not None and end <= now:
            found.append(
                compiled.rule.diagnostic(
                    "flight.end",
                    f"rule {rule_id!r}: its flight ended at {end.isoformat()}; "
                    "it will not act again",
                    severity="warning",
                )
            )
    return found


def creative_uses(ruleset: RuleSet):
    """What each rule asks of its creatives: the offer per variant, located."""
    from engine.creatives.checks import CreativeUse

    uses = []
    for rule_id, compiled in sorted(ruleset.rules.items()):
        spec = compiled.spec
        for variant, plans in spec.actions.items():
            offer = next((dict(p.params) for p in plans if p.kind == "coupon"), {})
            for plan in plans:
                creative = plan.params.get("creative")
                if creative:
                    location = compiled.rule.location_of(f"actions.{plan.kind}.creative")
                    uses.append(CreativeUse(rule_id, creative, variant, offer, location))
    return uses


def _creatives(settings: Settings, ruleset: RuleSet) -> list[Diagnostic]:
    from engine.creatives.checks import check_creatives

    return list(check_creatives(settings, creative_uses(ruleset)))


def _matches_nobody(settings: Settings, ruleset: RuleSet, now: datetime) -> list[Diagnostic]:
    """Warn about rules whose conditions select no user of the current store."""
    from engine.planning.pipeline import build_sources
    from engine.store import open_store

    if not ruleset.rules:
        return []
    try:
        store = open_store(settings)
    except NudgeError:
        return []  # no database yet: nothing to compare with
    warnings = []
    try:
        with store.connect() as connection:
            if connection.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0:
                return []
            for rule_id, compiled in sorted(ruleset.rules.items()):
                spec = compiled.spec
                if spec.event_trigger or not spec.when:
                    continue
                sources = build_sources(connection, settings, now, False)
                u, p = sources.users, sources.profiles
                matching = connection.execute(
                    sa.select(sa.func.count())
                    .select_from(u.outerjoin(p, p.c.user_id == u.c.id))
                    .where(compiled.compile_conditions(spec.when, sources))
                ).scalar()
                if matching == 0:
                    warnings.append(
                        compiled.rule.diagnostic(
                            "when",
                            f"rule {rule_id!r} matches nobody in the current store "
                            "(its conditions select no user now)",
                            severity="warning",
                            key=True,
                        )
                    )
    finally:
        store.dispose()
    return warnings
