"""How `nudge check` reads the rule files itself, so that every problem shows at once:
the conditions of a rule with a schema error are still type-checked (each part of an
`and` / `or` on its own), its `after` target and creatives are still checked, every
segment is checked, and a broken segment does not make the rules using it report a
misleading "unknown segment" (engine/checking/check.py merges the two)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.errors import Diagnostic, LocatedError
from engine.planning.compile import RuleSet
from engine.rules.located_text import LocatedText


@dataclass
class Audit:
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


def audit_rule_files(settings: Settings, ruleset: RuleSet) -> Audit:
    from engine.conditions import Catalog
    from engine.creatives.render import display_path
    from engine.rules.loader import rule_files
    from engine.rules.segments import SEGMENT_FILES, load_segments

    audit = Audit()
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
        from engine.rules.trigger import TRIGGER_KINDS
        from engine.trigger_kinds import plugin_trigger_kinds

        kinds = (*TRIGGER_KINDS, *plugin_trigger_kinds())
        given = [kind for kind in kinds if self.trigger.get(kind) is not None]
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
        from engine.rules.fields import did_you_mean

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
        from engine.rules.fields import SLUG_PATTERN

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
