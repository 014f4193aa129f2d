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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import clock
from engine.config import Settings
from engine.errors import Diagnostic, LocatedError, NudgeError
from engine.planning.compile import RuleSet, load_ruleset
from engine.rules.located_text import LocatedText


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
    audit = _audit(settings, ruleset)
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
    from engine.rules.models import did_you_mean

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


# ---------------------------------------------------------------- the audit of rule files


@dataclass
class _Audit:
    """What check finds by reading the rule files itself (see the module doc)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    # rules/segments.yaml: its path, and what the loader itself says about the file.
    segments_path: str | None = None
    segments_file: list[Diagnostic] = field(default_factory=list)
    segment_errors: bool = False
    # (event type, warning at its place) for each type a rule names.
    event_types: list[tuple[str, Callable[[str], Diagnostic]]] = field(default_factory=list)
    # The creatives named by rules that did not load, checked without rendering.
    broken_uses: list = field(default_factory=list)

    def merged(self, loaded: list[Diagnostic]) -> list[Diagnostic]:
        """The loader's and compiler's diagnostics with the audit's.

        The audit's segment errors replace the compiler's (which stops at the first),
        and while a segment is broken the compiler's "unknown segment" errors are
        consequences, not problems of the rules: the audit explains those rules.
        """
        kept = [
            d
            for d in loaded
            if not (d.location.path == self.segments_path and d not in self.segments_file)
            and not (self.segment_errors and d.message.startswith("unknown segment "))
        ]
        return kept + self.diagnostics


def _audit(settings: Settings, ruleset: RuleSet) -> _Audit:
    from engine.conditions import Catalog
    from engine.creatives.render import display_path
    from engine.rules.loader import rule_files
    from engine.rules.segments import SEGMENT_FILES, load_segments

    audit = _Audit()
    folder = settings.rules_dir
    located, audit.segments_file = load_segments(folder)
    audit.segments_path = next(
        (str(folder / name) for name in SEGMENT_FILES if (folder / name).is_file()), None
    )
    segments, problems, broken_segments = _check_segments(located)
    audit.diagnostics += audit.segments_file + problems
    audit.segment_errors = bool(problems)
    files = rule_files(folder)
    ids = list(dict.fromkeys(path.stem for path in files))
    seen: set[str] = set()
    for path in files:
        if path.stem in seen:
            continue  # two files for one id: the loader reports it
        seen.add(path.stem)
        document = _document(path)
        if document is None or not isinstance(document.data, dict):
            continue
        rule = _RuleFile(path.stem, document, skipped=path.stem not in ruleset.rules)
        catalog = Catalog.for_trigger(rule.trigger_kind, segments=segments, rule_ids=set(ids))
        for text in rule.conditions():
            tree, found = _check_text(text, catalog)
            audit.diagnostics += found
            if tree is not None:
                audit.event_types += _event_types_in(tree, text)
            if rule.skipped and audit.segment_errors:
                shown = display_path(settings, audit.segments_path or folder)
                audit.diagnostics += _segment_notes(
                    rule.rule_id, text, set(located), broken_segments, shown
                )
        if rule.skipped:
            audit.diagnostics += rule.follow_up_problems(ids)
            audit.broken_uses += rule.creative_uses()
        audit.event_types += rule.trigger_event()
    return audit


def _document(path: Path):
    from engine.rules.yaml_source import parse_yaml

    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
        return parse_yaml(text, str(path))
    except (OSError, UnicodeDecodeError, LocatedError):
        return None  # the loader reports why


@dataclass
class _RuleFile:
    """A rule file as parsed YAML: valid or not, what check can still read from it."""

    rule_id: str
    document: Any  # engine.rules.yaml_source.YamlDocument
    skipped: bool  # not among the rules that run (schema, condition or segment errors)

    @property
    def trigger(self) -> dict:
        trigger = self.document.data.get("trigger")
        return trigger if isinstance(trigger, dict) else {}

    @property
    def trigger_kind(self) -> str:
        from engine.rules.models import TRIGGER_KINDS

        given = [kind for kind in TRIGGER_KINDS if self.trigger.get(kind) is not None]
        # Unknown (a broken trigger): the event catalog is the widest, so no condition
        # gets an error that is only a consequence of the trigger's.
        return given[0] if len(given) == 1 else "event"

    def conditions(self) -> Iterator[LocatedText]:
        data = self.document.data
        paths: list[tuple] = []
        for key in ("when", "unless"):
            value = data.get(key)
            if isinstance(value, str):
                paths.append((key,))
            elif isinstance(value, list):
                paths += [(key, index) for index in range(len(value))]
        if self.trigger_kind == "event" and "where" in self.trigger:
            paths.append(("trigger", "where"))
        for path in paths:
            text = self.document.located_text(path)
            if text is not None:
                yield text

    def follow_up_problems(self, ids: list[str]) -> list[Diagnostic]:
        """The loader's `after` checks, which it skips for a file with schema errors."""
        from engine.rules.models import did_you_mean

        target = self.trigger.get("after")
        if not isinstance(target, str) or self.trigger_kind != "after":
            return []
        if target == self.rule_id:
            message = f"rule {self.rule_id!r} cannot follow itself"
        elif target not in ids:
            hint = did_you_mean(target, [i for i in ids if i != self.rule_id])
            message = f"'after' names no rule {target!r}{hint}"
        else:
            return []
        return [self.document.diagnostic(("trigger", "after"), message)]

    def creative_uses(self) -> list:
        """The creatives its email/SMS/webhook actions name, to check they can be sent."""
        import re

        from engine.creatives.uses import CreativeUse
        from engine.rules.models import SLUG_PATTERN

        actions = self.document.data.get("actions")
        uses = []
        for kind, params in actions.items() if isinstance(actions, dict) else ():
            creative = params.get("creative") if isinstance(params, dict) else None
            if kind in ("email", "sms", "webhook") and isinstance(creative, str):
                if re.match(SLUG_PATTERN, creative):
                    location = self.document.location(("actions", kind, "creative"))
                    uses.append(
                        CreativeUse(
                            self.rule_id, creative, None, {}, location, kind=kind, render=False
                        )
                    )
        return uses

    def trigger_event(self) -> list[tuple[str, Callable[[str], Diagnostic]]]:
        event = self.trigger.get("event")
        if self.trigger_kind != "event" or not isinstance(event, str):
            return []
        document = self.document

        def warning(message: str) -> Diagnostic:
            return document.diagnostic(("trigger", "event"), message, severity="warning")

        return [(event, warning)]


def _check_text(text: LocatedText, catalog) -> tuple[Any, list[Diagnostic]]:
    """Type-check one condition: its tree, or every independent error in it.

    The first error is the one rule loading reports; the other operands of a top-level
    `and` / `or` are then checked on their own, so a second typo shows up now too.
    """
    from engine.conditions import ConditionError, check_tree, parse_condition

    try:
        tree = parse_condition(text.text)
    except ConditionError as exc:
        return None, [text.diagnostic(exc.message, exc.offset)]
    try:
        return check_tree(tree, catalog=catalog), []
    except ConditionError as exc:
        first = exc
    problems = [text.diagnostic(first.message, first.offset)]
    for part in _operands(tree):
        if part.offset <= first.offset < part.offset + part.length:
            continue
        try:
            check_tree(part, catalog=catalog)
        except ConditionError as exc:
            problems.append(text.diagnostic(exc.message, exc.offset))
    return None, problems


def _operands(tree) -> list:
    from engine.conditions import nodes as n

    if isinstance(tree, n.And | n.Or):
        return [leaf for item in tree.items for leaf in _operands(item)]
    return [tree]


def _check_segments(located: dict[str, LocatedText]) -> tuple[dict, list[Diagnostic], set[str]]:
    """Every segment's errors; checked trees for the others, with a stand-in for each
    broken one so that whatever uses it is still checked, without a second error."""
    from engine.conditions import Catalog, ConditionError, check_segments

    if not located:
        return {}, [], set()
    catalog = Catalog.for_trigger("segment")
    stand_in = _check_text(LocatedText.unlocated("true"), catalog)[0]
    everyone = catalog.with_segments({name: stand_in for name in located})
    problems: list[Diagnostic] = []
    broken: set[str] = set()
    texts = {name: text.text for name, text in located.items()}
    for name, text in located.items():
        found = _check_text(text, everyone)[1]
        if found:
            problems += found
            broken.add(name)
            texts[name] = "true"
    # What only the segments together can show: a cycle. Each round stands one more
    # segment in for "true", so this ends.
    while True:
        try:
            return check_segments(texts), problems, broken
        except ConditionError as exc:
            name = exc.segment
            if name not in located or name in broken:  # not expected: report, stop
                first = next(iter(located.values()))
                return {}, [*problems, Diagnostic(first.location, exc.message)], set(located)
            problems.append(located[name].diagnostic(exc.message, exc.offset))
            broken.add(name)
            texts[name] = "true"


def _segment_notes(
    rule_id: str,
    text: LocatedText,
    defined: set[str],
    broken: set[str],
    shown: str,
) -> list[Diagnostic]:
    """Why a rule that uses a segment is skipped while rules/segments.yaml has errors."""
    from engine.conditions import ConditionError, parse_condition
    from engine.conditions import nodes as n

    try:
        tree = parse_condition(text.text)
    except ConditionError:
        return []
    notes = []
    for node in n.walk(tree):
        if not (isinstance(node, n.Call) and node.name == "in_segment" and node.args):
            continue
        name = getattr(node.args[0], "value", None)
        if name not in defined:
            continue  # an unknown segment is an error of its own
        which = ", which has an error" if name in broken else ""
        notes.append(
            text.diagnostic(
                f"rule {rule_id!r} is skipped until {shown} has no errors: it uses segment "
                f"{name!r}{which}",
                node.offset,
            )
        )
    return notes


def _event_types_in(tree, text: LocatedText) -> list[tuple[str, Callable[[str], Diagnostic]]]:
    """The event types that count("x") and sum("x.amount") read, located."""
    from engine.conditions import nodes as n
    from engine.conditions.functions import sum_event_type

    found = []
    for node in n.walk(tree):
        if not isinstance(node, n.Call) or node.name not in ("count", "sum"):
            continue
        argument = node.argument("event_type" if node.name == "count" else "amount")
        value = getattr(argument, "value", None)
        if not isinstance(value, str):
            continue
        event_type = value if node.name == "count" else sum_event_type(value)
        if event_type:
            found.append((event_type, _warning_at(text, argument.offset)))
    return found


def _warning_at(text: LocatedText, offset: int) -> Callable[[str], Diagnostic]:
    return lambda message: text.diagnostic(message, offset, severity="warning")
