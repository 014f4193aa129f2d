"""pydantic validation errors -> located diagnostics that teach.

pydantic reports a `loc` like ("trigger", "stage") or ("flight", "start", "date");
the YAML document knows where each real path starts. Union and validator tags in a
loc are not keys of the file and are skipped. Messages say what and how to fix:
"unknown key 'tigger' (did you mean 'trigger'?)" rather than "Extra inputs are not
permitted".
"""

from __future__ import annotations

import re
import types
import typing
from datetime import date
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.errors import Diagnostic
from engine.rules.fields import CLOCK_PATTERN, SLUG_PATTERN, did_you_mean
from engine.rules.yaml_source import YamlDocument, YamlPath


def validation_diagnostics(
    document: YamlDocument,
    error: ValidationError,
    model: type[BaseModel],
    prefix: YamlPath = (),
    data: Any = None,
) -> list[Diagnostic]:
    """One diagnostic per offending path (the first error there), in file order.

    `prefix` is where the validated value sits in the file; `data` is that value as
    validated (default: the document's value at `prefix`).
    """
    if data is None:
        data = _get(document.data, prefix)
    seen: set[tuple[YamlPath, bool]] = set()
    found: list[tuple[YamlPath, bool, str]] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        path = prefix + _resolve(data, loc)
        on_key = item["type"] in ("extra_forbidden", "missing")
        if (path, on_key) in seen:
            continue
        seen.add((path, on_key))
        found.append((path, on_key, _message(item, loc, path[len(prefix) :], prefix, model)))
    # "unknown key 'tigger' (did you mean 'trigger'?)" already says what is missing.
    suggested = {
        (path[:-1], message.rsplit("'", 2)[-2])
        for path, on_key, message in found
        if on_key and message.startswith("unknown key") and message.endswith("?)")
    }
    return [
        document.diagnostic(path, message, key=on_key)
        for path, on_key, message in found
        if not (
            message.startswith("missing required key")
            and (path, _missing_key(message)) in suggested
        )
    ]


def _missing_key(message: str) -> str:
    return message.split("'")[1]


def _message(
    item: Any, loc: tuple, path: YamlPath, prefix: YamlPath, model: type[BaseModel]
) -> str:
    kind = item["type"]
    message = str(item["msg"])
    value = item.get("input")
    dotted = ".".join(str(part) for part in prefix + path) or "the rule"
    if kind == "extra_forbidden":
        key = loc[-1]
        owner = _model_at(model, loc[:-1])
        choices = [] if owner is None else list(owner.model_fields)
        if owner is not None and hasattr(owner, "accepted_keys"):
            choices = owner.accepted_keys()
        return f"unknown key {key!r}" + did_you_mean(str(key), choices)
    if kind == "missing":
        where = ".".join(str(part) for part in prefix + path)
        return f"missing required key {loc[-1]!r}" + (f" in {where!r}" if where else "")
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        expected = str((item.get("ctx") or {}).get("expected", ""))
        choices = re.findall(r"'([^']*)'", expected)
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        return f"{dotted} must be one of {expected}, not {value!r}{hint}"
    if kind == "string_pattern_mismatch":
        pattern = (item.get("ctx") or {}).get("pattern")
        if pattern == SLUG_PATTERN:
            return (
                f"{dotted} {value!r} must be lowercase letters and digits joined by "
                "'-' or '_' (for example 'winback-gold')"
            )
        if pattern == CLOCK_PATTERN:
            return f"{dotted} {value!r} is not a time of day as HH:MM (00:00 to 23:59)"
    if kind == "string_type":
        shown = value.isoformat() if isinstance(value, date) else repr(value)
        return f"{dotted} must be text, not {shown} (put it in quotes)"
    if kind == "dict_type" and value is None:
        return f"{dotted} is empty; it needs a mapping of keys (key: value)"
    return f"{dotted}: {message[:1].lower()}{message[1:]}"


def _resolve(data: Any, loc: tuple) -> YamlPath:
    """The part of `loc` that names real keys and indexes of `data`."""
    path: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
            path.append(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
            path.append(part)
    return tuple(path)


def _get(data: Any, path: YamlPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the key at `loc` (for "did you mean" choices)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                continue  # a union or validator tag
            current = _unwrap(field.annotation)
        elif typing.get_origin(current) is dict:
            current = _unwrap(typing.get_args(current)[1])
        elif typing.get_origin(current) in (list, tuple):
            current = _unwrap(typing.get_args(current)[0])
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X (the first model or container member)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [_unwrap(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        for member in members:
            if isinstance(member, type) and issubclass(member, BaseModel):
                return member
        for member in members:
            if typing.get_origin(member) in (dict, list, tuple):
                return member
        return members[0] if members else annotation
    return annotation
