"""`nudge check`: every rule, segment and creative, all problems at once.

Errors make the exit code 1; warnings (a rule that matches nobody in the current
store, an event type nothing sends) do not. Every diagnostic names file:line:col.

Loading a rule stops at its schema errors, and compiling stops at the first broken
segment, which is right for running rules but would make `nudge check` show problems
one round at a time. So check also audits the files itself: the conditions of a rule
with a schema error are still type-checked (each part of an `and` / `or` on its own,
so two typos in one condition are two errors), its `after` target and its creatives
are still checked, every segment is checked, and a broken segment does not make the
rules using it report a misleading "unknown segment".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from engine import clock
from engine.checking.audit import audit_rule_files
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
    audit = audit_rule_files(settings, ruleset)
    report = CheckReport(rules=sorted(ruleset.rules))
    report.diagnostics = _in_file_order(audit.merged(ruleset.diagnostics))
    report.schedules = _schedules(settings, ruleset, now)
    report.diagnostics += _flights_over(ruleset, now)
    report.diagnostics += _creatives(settings, ruleset, audit.broken_uses)
    if use_store:
        store = _existing_store(settings)
        if store is not None:
            try:
                report.diagnostics += _unknown_event_types(settings, store, audit.event_types)
                report.diagnostics += _matches_nobody(settings, store, ruleset, now)
            finally:
                store.dispose()
    return report


def _in_file_order(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    unique = list(dict.fromkeys(diagnostics))
    return sorted(
        unique, key=lambda d: (d.location.path, d.location.line or 0, d.location.column or 0)
    )


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


def _creatives(settings: Settings, ruleset: RuleSet, broken_uses: list) -> list[Diagnostic]:
    from engine.creatives.checks import check_creatives
    from engine.creatives.uses import creative_uses

    return list(check_creatives(settings, creative_uses(ruleset) + broken_uses))


def _existing_store(settings: Settings):
    """The project's store, or None when there is no database (yet) to read."""
    from engine.store import open_store

    url = sa.engine.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(url.database).exists():
            return None  # opening it would create an empty database file
    try:
        return open_store(settings)
    except (NudgeError, sa.exc.OperationalError):
        return None  # no schema yet, or no server: nothing to compare with


def _matches_nobody(settings: Settings, store, ruleset: RuleSet, now: datetime) -> list[Diagnostic]:
    """Warn about rules whose conditions select no user of the current store."""
    from engine.planning.pipeline import build_sources

    if not ruleset.rules:
        return []
    warnings = []
    with store.read() as connection:
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
    return warnings


# ---------------------------------------------------------------- event types

# Every distinct type, one index seek per type (ix_events_type_time leads with `type`):
# a "loose index scan", where SELECT DISTINCT would read every event of a big store.
_DISTINCT_EVENT_TYPES = sa.text(
    """
    WITH RECURSIVE types(type) AS (
        SELECT (SELECT type FROM events ORDER BY type LIMIT 1)
        UNION ALL
        SELECT (SELECT e.type FROM events e WHERE e.type > types.type ORDER BY e.type LIMIT 1)
        FROM types WHERE types.type IS NOT NULL
    )
    SELECT type FROM types WHERE type IS NOT NULL
    """
)


def ingested_event_types(connection) -> list[str]:
    """The distinct event types of the store, sorted."""
    return [row[0] for row in connection.execute(_DISTINCT_EVENT_TYPES)]


def _unknown_event_types(
    settings: Settings, store, used: list[tuple[str, Callable[[str], Diagnostic]]]
) -> list[Diagnostic]:
    """Warn about event types rules use that no event has and [events] known lacks.

    A misspelt type (`purchse`) is not an error of the condition language (shops send
    custom types), but the rule would never act. With nothing to compare with (no
    event ingested, no [events] known) there is no warning.
    """
    from engine.rules.fields import did_you_mean

    if not used:
        return []
    with store.read() as connection:
        ingested = ingested_event_types(connection)
    candidates = sorted(set(ingested) | set(settings.events.known))
    if not candidates:
        return []
    warnings = []
    for event_type, diagnostic in used:
        if event_type in candidates:
            continue
        warnings.append(
            diagnostic(
                f"no ingested event has type {event_type!r}, and nudge.toml [events] known "
                f"does not list it{did_you_mean(event_type, candidates)}"
            )
        )
    return _in_file_order(warnings)
