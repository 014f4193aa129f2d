"""The rule file's shape as pydantic models: the one source of validation and JSON Schema.

`RuleFile` is exactly what a YAML file may hold (every model forbids unknown keys);
`Rule` is a loaded rule: the same fields plus its id, source, content hash, the
validated action parameters (per variant too) and the position of every key.
Action parameters are validated by the action kinds' own models
(engine.action_kinds), never re-declared here.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from engine.errors import Diagnostic, Location
from engine.localtime import day_end, day_start, first_instant_at_or_after
from engine.rules.fields import CLOCK_PATTERN, Conditions, Duration, RuleModel, Slug
from engine.rules.trigger import Trigger


class Flight(RuleModel):
    """When the rule may act: dates are whole days in the shop time zone, both included."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"start": "2026-11-01", "end": "2026-11-11"}]}
    )

    start: datetime | date | None = Field(default=None, description="First day (or instant).")
    end: datetime | date | None = Field(default=None, description="Last day (or instant).")

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: datetime | date | None, info: ValidationInfo):
        start = info.data.get("start")
        if value is not None and start is not None and _wall(value, end=True) < _wall(start):
            raise ValueError(
                f"flight end {value.isoformat()} is before its start {start.isoformat()}"
            )
        return value

    def bounds(self, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
        """[start, end) as aware instants; a date `end` includes that whole day."""
        return _instant(self.start, tz, end=False), _instant(self.end, tz, end=True)


def _wall(value: date, end: bool = False) -> datetime:
    """A naive wall-clock time for comparing a start and an end in the same zone."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.combine(value + timedelta(days=1 if end else 0), time())


def _instant(value: date | None, tz: ZoneInfo, *, end: bool) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        # A flight time the zone skips starts (or ends) when the clocks resume.
        return first_instant_at_or_after(value, tz) if value.tzinfo is None else value
    return day_end(value, tz) if end else day_start(value, tz)


Clock = Annotated[str, StringConstraints(pattern=CLOCK_PATTERN)]


class SendWindow(RuleModel):
    """Deliver only between these local times of the user; outside, deferred (not dropped)."""

    between: tuple[Clock, Clock] = Field(
        description="[from, to] as HH:MM in the user's time zone; may wrap midnight.",
        examples=[["09:00", "21:00"]],
    )

    @field_validator("between")
    @classmethod
    def _not_empty(cls, value: tuple[str, str]) -> tuple[str, str]:
        if value[0] == value[1]:
            raise ValueError(f"the send window {value[0]}-{value[1]} is empty")
        return value

    @property
    def times(self) -> tuple[time, time]:
        return time.fromisoformat(self.between[0]), time.fromisoformat(self.between[1])


class UserCap(RuleModel):
    max: Annotated[int, Strict(), Field(ge=1, description="At most this many times...")]
    per: Duration = Field(description="...in any window this long.")


class Caps(RuleModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"per_user": {"max": 1, "per": "30d"}}]}
    )

    per_user: UserCap | None = Field(
        default=None, description="How often one user may be acted on by this rule."
    )


def _fraction(value: Any) -> Any:
    """'10%' -> 0.1; numbers stay numbers (checked against 0 <= h < 1 below)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                return float(text[:-1]) / 100
            except ValueError:
                pass
        raise ValueError(
            f"holdout {value!r} must be a percentage like '10%' or a fraction like 0.1"
        )
    if isinstance(value, bool):
        raise ValueError("holdout must be a percentage like '10%' or a fraction like 0.1")
    return value


Holdout = Annotated[
    float,
    BeforeValidator(_fraction),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d{1,2}(\.\d+)?%$"},
                {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            ],
            "examples": ["10%", 0.1],
        }
    ),
]


class Variant(RuleModel):
    """One arm of an experiment: a weight and overrides deep-merged into `actions`."""

    weight: Annotated[
        float, Field(gt=0, description="Relative share of the non-held-out users.")
    ] = 1
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Written inline: `bigger: {weight: 1, coupon: {value: 30}}`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _inline_overrides(cls, data: Any) -> Any:
        # In YAML the overrides sit beside `weight` under the action kind names.
        if isinstance(data, dict) and "overrides" not in data:
            rest = {key: value for key, value in data.items() if key != "weight"}
            return {**({"weight": data["weight"]} if "weight" in data else {}), "overrides": rest}
        return data


class Experiment(RuleModel):
    """A holdout (control group) and weighted variants; assignment is deterministic."""

    holdout: Holdout = Field(
        default=0.0, description="Share of users held out: recorded, no actions."
    )
    variants: dict[Slug, Variant] = Field(default_factory=dict, description="Name -> variant.")

    @field_validator("holdout")
    @classmethod
    def _fraction_range(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"holdout {value * 100:g}% must be at least 0% and below 100%")
        return value


DEFAULT_ATTRIBUTION_WINDOW = timedelta(days=7)


class Attribution(RuleModel):
    """How `nudge report` credits purchases to this rule's actions."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"window": "3d"}]})

    window: Duration = Field(
        default=DEFAULT_ATTRIBUTION_WINDOW,
        description=(
            "A purchase is a conversion of this rule when it comes after the action was "
            "delivered (for a held-out user: after the decision) and at most this long "
            "after it. Default 7d. A redeemed coupon of the rule counts whatever the window."
        ),
        json_schema_extra={"default": "7d"},
    )


class RuleFile(RuleModel):
    """A rule file, `rules/<id>.yaml`: trigger + conditions + actions + delivery controls."""

    model_config = ConfigDict(
        title="Nudge rule",
        json_schema_extra={
            "examples": [
                {
                    "description": "Win back gold/silver members with no purchase for 60 days.",
                    "trigger": {"stage": "lapsed_member"},
                    "when": ["member_tier in ['gold', 'silver']"],
                    "actions": {"coupon": {"value": 20, "expires_in": "14d"}},
                }
            ]
        },
    )

    id: Slug | None = Field(
        default=None,
        description="Optional; when given it must equal the file name (without .yaml).",
    )
    description: str = Field(default="", description="What the rule is for, in one sentence.")
    owner: str | None = Field(
        default=None, description="Who to ask about this rule.", examples=["crm-team"]
    )
    status: Literal["active", "shadow", "paused"] = Field(
        default="active",
        description="active; shadow: evaluate and record, deliver nothing; paused: skipped.",
    )
    trigger: Trigger
    when: Conditions = Field(default_factory=list, description="Conditions that must all hold.")
    unless: Conditions = Field(
        default_factory=list,
        description="Exit conditions: if any holds, the user is skipped (re-checked at delivery).",
    )
    once: Literal["per_user", "per_occurrence"] | None = Field(
        default=None,
        description="per_user: at most once ever per user. Default: once per occurrence.",
    )
    every: Duration | None = Field(
        default=None, description="Re-eligibility: a user may be acted on again after this long."
    )
    flight: Flight | None = None
    priority: Annotated[int, Strict()] = Field(
        default=0, description="Inside an exclusive group the highest priority wins."
    )
    exclusive_group: Slug | None = Field(
        default=None, description="At most one rule of the group acts on a user per run."
    )
    send_window: SendWindow | None = None
    caps: Caps | None = None
    experiment: Experiment | None = None
    attribution: Attribution | None = Field(
        default=None,
        description="How `nudge report` credits purchases to this rule: {window: 3d}.",
    )
    actions: dict[str, dict[str, Any]] = Field(
        min_length=1, description="What the rule does: action kind -> its parameters."
    )

    @field_validator("every")
    @classmethod
    def _once_or_every(cls, value: timedelta | None, info: ValidationInfo):
        if value is not None and info.data.get("once") is not None:
            raise ValueError("'every' and 'once' exclude each other; keep one")
        return value


class Rule(RuleFile):
    """A loaded, valid rule. `actions` and `variant_actions` hold validated parameters."""

    id: Slug  # type: ignore[assignment]  # always set: the file stem
    actions: dict[str, Any]  # type: ignore[assignment]  # kind -> ActionParams
    variant_actions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: Path | None = None
    content_hash: str = ""
    locations: dict[str, Location] = Field(default_factory=dict, repr=False)
    key_locations: dict[str, Location] = Field(default_factory=dict, repr=False)
    source_lines: tuple[str, ...] = Field(default=(), repr=False)

    def actions_for(self, variant: str | None) -> dict[str, Any]:
        """The actions a user in `variant` gets (overrides merged and validated)."""
        if variant is None:
            return self.actions
        return self.variant_actions[variant]

    def location_of(self, dotted: str, *, key: bool = False) -> Location:
        """Where `dotted` ("when.1", "actions.coupon.value") is; its nearest ancestor
        when it is not in the file (a default value)."""
        table = self.key_locations if key else self.locations
        parts = dotted.split(".") if dotted else []
        while parts:
            found = table.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
            table = self.key_locations  # an absent value is shown at its parent key
        path = str(self.source) if self.source is not None else self.id
        return self.locations.get("", Location(path, 1, 1))

    def diagnostic(
        self, dotted: str, message: str, *, severity: str = "error", key: bool = False
    ) -> Diagnostic:
        """A located diagnostic about part of this rule (for `nudge check` warnings)."""
        location = self.location_of(dotted, key=key)
        line = location.line
        source = (
            self.source_lines[line - 1] if line and 0 < line <= len(self.source_lines) else None
        )
        return Diagnostic(location, message, severity, source)
