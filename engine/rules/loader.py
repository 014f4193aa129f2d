"""rules/*.yaml -> validated `Rule`s, and every problem as a located diagnostic.

One broken file never stops the others (DESIGN invariant 6): `load_rules` reports it
and keeps going. Inside one file, all problems are collected before giving up, so an
ops person fixes a file in one round rather than one error per `nudge check`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.action_kinds import ACTION_KINDS, UnknownActionKindError, get_action_kind
from engine.errors import Diagnostic, LocatedError, Location
from engine.rules.diagnostics import validation_diagnostics
from engine.rules.fields import SLUG_PATTERN, did_you_mean
from engine.rules.located_text import LocatedText
from engine.rules.models import Rule, RuleFile
from engine.rules.segments import SEGMENT_FILES, load_segments
from engine.rules.yaml_source import YamlDocument, YamlPath, parse_yaml, split_lines

RULE_SUFFIXES = (".yaml", ".yml")
# Keys whose values are condition text: kept as LocatedText so that a condition
# error lands on the exact character of the file.
CONDITION_KEYS: tuple[YamlPath, ...] = (("when",), ("unless",), ("trigger", "where"))


@dataclass
class LoadResult:
    """Everything found in a rules folder; `rules` holds only the valid ones."""

    rules: dict[str, Rule] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    segments: dict[str, LocatedText] = field(default_factory=dict)
    broken: dict[str, list[Diagnostic]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def rule_files(folder: Path) -> list[Path]:
    """The rule files of a folder: *.yaml / *.yml at the top, minus segments.yaml.

    rules/tests/ (rule unit tests) and hidden files are not rules.
    """
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix in RULE_SUFFIXES
        and path.name not in SEGMENT_FILES
        and not path.name.startswith((".", "_"))
    )


def load_rules(folder: Path) -> LoadResult:
    """Load every rule file and segments.yaml of `folder`; never raises for bad files."""
    result = LoadResult()
    files = rule_files(folder)
    ids = [path.stem for path in files]
    loaded: dict[str, Rule] = {}
    for path in files:
        rule_id = path.stem
        if rule_id in loaded or rule_id in result.broken:
            message = f"two files define rule {rule_id!r}; keep one of .yaml / .yml"
            _broken(result, rule_id, [Diagnostic(Location(str(path), 1, 1), message)])
            continue
        rule, diagnostics = _load(path)
        result.diagnostics.extend(diagnostics)
        if rule is None:
            result.broken[rule_id] = [d for d in diagnostics if d.severity == "error"]
        else:
            loaded[rule_id] = rule
    for rule_id, rule in loaded.items():
        problems = _follow_up_problems(rule, ids)
        if problems:
            _broken(result, rule_id, problems)
        else:
            result.rules[rule_id] = rule
    segments, diagnostics = load_segments(folder)
    result.segments = segments
    result.diagnostics.extend(diagnostics)
    for diagnostic in diagnostics:
        if diagnostic.severity == "error":
            result.broken.setdefault(Path(diagnostic.location.path).name, []).append(diagnostic)
    return result


def _broken(result: LoadResult, key: str, diagnostics: list[Diagnostic]) -> None:
    result.diagnostics.extend(diagnostics)
    result.broken.setdefault(key, []).extend(diagnostics)


def _follow_up_problems(rule: Rule, ids: list[str]) -> list[Diagnostic]:
    """An `after` trigger must follow another rule of the folder."""
    target = rule.trigger.after
    if target is None:
        return []
    if target == rule.id:
        return [rule.diagnostic("trigger.after", f"rule {rule.id!r} cannot follow itself")]
    if target not in ids:
        hint = did_you_mean(target, [i for i in ids if i != rule.id])
        return [rule.diagnostic("trigger.after", f"'after' names no rule {target!r}{hint}")]
    return []


def load_rule_file(path: Path) -> Rule:
    """One rule file -> Rule; raises LocatedError with every problem of the file."""
    rule, diagnostics = _load(path)
    if rule is None:
        raise LocatedError([d for d in diagnostics if d.severity == "error"])
    return rule


def _load(path: Path) -> tuple[Rule | None, list[Diagnostic]]:
    display = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Diagnostic(Location(display, None, None), f"cannot read: {exc.strerror}")]
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = "the file is not UTF-8 text; save it as UTF-8"
        return None, [Diagnostic(Location(display, line, 1), message)]
    try:
        document = parse_yaml(text, display)
    except LocatedError as exc:
        return None, exc.diagnostics
    diagnostics = _check(document, path.stem)
    if diagnostics:
        return None, diagnostics
    return _build(document, path, hashlib.sha256(raw).hexdigest()), []


def _check(document: YamlDocument, stem: str) -> list[Diagnostic]:
    data = document.data
    if data is None:
        message = "the file is empty; a rule needs at least 'trigger' and 'actions'"
        return [document.diagnostic((), message)]
    if not isinstance(data, dict):
        message = (
            "a rule file is a mapping of keys (trigger:, when:, actions:...), not a list or a value"
        )
        return [document.diagnostic((), message)]
    diagnostics: list[Diagnostic] = []
    if not re.match(SLUG_PATTERN, stem):
        message = (
            f"the file name {stem!r} is the rule id: use lowercase letters and digits "
            "joined by '-' or '_' (for example winback-gold.yaml)"
        )
        diagnostics.append(document.diagnostic_at(Location(document.path, 1, 1), message))
    file_id = data.get("id")
    if isinstance(file_id, str) and file_id != stem:
        message = f"id {file_id!r} must equal the file name {stem!r} (the id is the file name)"
        diagnostics.append(document.diagnostic(("id",), message))
    try:
        RuleFile.model_validate(_with_located_text(document))
    except ValidationError as exc:
        diagnostics.extend(validation_diagnostics(document, exc, RuleFile))
    actions = data.get("actions")
    if isinstance(actions, dict):
        diagnostics.extend(_action_diagnostics(document, actions))
    return _in_file_order(diagnostics)


def _in_file_order(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    unique = list(dict.fromkeys(diagnostics))
    return sorted(unique, key=lambda d: (d.location.line or 0, d.location.column or 0))


def _with_located_text(document: YamlDocument) -> dict[str, Any]:
    """The document's data with condition strings replaced by LocatedText."""
    data = dict(document.data)
    for path in CONDITION_KEYS:
        parent: Any = data
        for part in path[:-1]:
            child = parent.get(part) if isinstance(parent, dict) else None
            if not isinstance(child, dict):
                break
            parent[part] = child = dict(child)
            parent = child
        else:
            key = path[-1]
            if isinstance(parent, dict) and key in parent:
                parent[key] = _locate(document, path, parent[key])
    return data


def _locate(document: YamlDocument, path: YamlPath, value: Any) -> Any:
    if isinstance(value, str):
        return document.located_text(path) or value
    if isinstance(value, list):
        return [_locate(document, (*path, index), item) for index, item in enumerate(value)]
    return value


# ---------------------------------------------------------------- actions


def _action_diagnostics(document: YamlDocument, actions: dict[Any, Any]) -> list[Diagnostic]:
    diagnostics, _ = _validated_actions(document, actions)
    diagnostics += _variant_diagnostics(document, actions)[0]
    return diagnostics


def _validated_actions(
    document: YamlDocument, actions: dict[Any, Any]
) -> tuple[list[Diagnostic], dict[str, Any]]:
    diagnostics: list[Diagnostic] = []
    validated: dict[str, Any] = {}
    for name, params in actions.items():
        if not isinstance(name, str):
            continue  # reported by the RuleFile model (keys are text)
        try:
            kind = get_action_kind(name)
        except UnknownActionKindError as exc:
            diagnostics.append(document.diagnostic(("actions", name), str(exc), key=True))
            continue
        if not isinstance(params, dict):
            continue  # reported by the RuleFile model (parameters are a mapping)
        try:
            validated[name] = kind.validate(params)
        except ValidationError as exc:
            diagnostics += validation_diagnostics(document, exc, kind.params, ("actions", name))
    return diagnostics, validated


def _variant_diagnostics(
    document: YamlDocument, actions: dict[Any, Any]
) -> tuple[list[Diagnostic], dict[str, dict[str, Any]]]:
    """Each variant's overrides must name actions of the rule; merged, they must be valid."""

    experiment = document.data.get("experiment")
    variants = experiment.get("variants") if isinstance(experiment, dict) else None
    if not isinstance(variants, dict):
        return [], {}
    diagnostics: list[Diagnostic] = []
    merged_by_variant: dict[str, dict[str, Any]] = {}
    known = [name for name in actions if isinstance(name, str)]
    for variant, body in variants.items():
        if not isinstance(body, dict):
            continue
        merged_actions = dict(actions)
        for name, override in body.items():
            if name == "weight":
                continue
            path = ("experiment", "variants", variant, name)
            if name not in actions:
                if name in ACTION_KINDS:
                    message = (
                        f"variant {variant!r} overrides action {name!r}, which the rule does "
                        "not have; add it under 'actions'"
                    )
                else:
                    message = (
                        f"variant {variant!r} overrides {name!r}, which is not an action of "
                        f"this rule{did_you_mean(str(name), known)}"
                    )
                diagnostics.append(document.diagnostic(path, message, key=True))
                continue
            if isinstance(override, dict) and isinstance(actions[name], dict):
                merged_actions[name] = deep_merge(actions[name], override)
        merged_by_variant[variant] = merged_actions
        diagnostics += _merged_diagnostics(document, variant, body, actions, merged_actions)
    return diagnostics, merged_by_variant


def _merged_diagnostics(
    document: YamlDocument,
    variant: Any,
    body: dict[Any, Any],
    actions: dict[Any, Any],
    merged: dict[Any, Any],
) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for name, override in body.items():
        kind = ACTION_KINDS.get(name) if isinstance(name, str) else None
        if kind is None or name not in actions or not isinstance(override, dict):
            continue
        if not isinstance(actions[name], dict):
            continue
        try:
            kind.validate(merged[name])
        except ValidationError as exc:
            if _valid(kind, actions[name]):
                # The action alone is fine, so the override broke it: point there.
                prefix = ("experiment", "variants", variant, name)
                diagnostics += validation_diagnostics(
                    document, exc, kind.params, prefix, data=merged[name]
                )
    return diagnostics


def _valid(kind: Any, params: dict[str, Any]) -> bool:
    try:
        kind.validate(params)
    except ValidationError:
        return False
    return True


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`; nested mappings merge, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------- building the Rule


def _build(document: YamlDocument, path: Path, content_hash: str) -> Rule:
    spec = RuleFile.model_validate(_with_located_text(document))
    _, actions = _validated_actions(document, document.data["actions"])
    _, merged = _variant_diagnostics(document, document.data["actions"])
    variant_actions: dict[str, dict[str, Any]] = {}
    for variant, raw in merged.items():
        variant_actions[variant] = {
            name: actions[name] if raw[name] is document.data["actions"][name]
            else _kind_validate(name, raw[name])
            for name in raw
        }  # fmt: skip
    values, keys = document.dotted_locations()
    fields = {name: getattr(spec, name) for name in RuleFile.model_fields}
    return Rule.model_validate(
        fields
        | {
            "id": path.stem,
            "actions": actions,
            "variant_actions": variant_actions,
            "source": path,
            "content_hash": content_hash,
            "locations": values,
            "key_locations": keys,
            "source_lines": document.lines or split_lines(""),
        }
    )


def _kind_validate(name: str, params: dict[str, Any]) -> Any:
    return get_action_kind(name).validate(params)
