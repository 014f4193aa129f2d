"""The field types rule files share: ids, durations, clock times, conditions, the strict
base model (unknown keys are errors), and "did you mean" for their messages."""

from __future__ import annotations

import difflib
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from engine.durations import format_duration, parse_duration
from engine.rules.located_text import LocatedText

SLUG_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
DURATION_PATTERN = r"^(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=64)]


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30d", "12h", "2w", "1d12h"]}
    ),
]


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    if not close and len(word) >= 3:
        # "lapsed" for "lapsed_member": a prefix is a strong hint that difflib underrates.
        close = [choice for choice in choices if choice.startswith(word)][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def stage_names() -> tuple[str, ...]:
    """The lifecycle stages a `trigger.stage` may name (engine/lifecycle/)."""
    from engine.lifecycle import FUNNEL_ORDER

    return FUNNEL_ORDER


def _conditions(value: Any) -> Any:
    """`when: expr` and `when: [expr, ...]` both mean a list (AND of the items)."""
    if value is None:
        return []
    if isinstance(value, str | LocatedText):
        return [value]
    return value


Conditions = Annotated[
    list[LocatedText],
    BeforeValidator(_conditions),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
            "examples": [["member_tier in ['gold', 'silver']", "total_spent >= 200"]],
        }
    ),
]


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
