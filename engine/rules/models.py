"""The rule file's shape as pydantic models: the one source of validation and JSON Schema.

`RuleFile` is exactly what a YAML file may hold (every model forbids unknown keys);
`Rule` is a loaded rule: the same fields plus its id, source, content hash, the
validated action parameters (per variant too) and the position of every key.
Action parameters are validated by the action kinds' own models
(engine.action_kinds), never re-declared here.
"""

from __future__ import annotations

import difflib
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from engine.durations import format_duration, parse_duration
from engine.errors import Diagnostic, Location
from engine.localtime import day_end, day_start, first_instant_at_or_after
from engine.rules.located_text import LocatedText

SLUG_PATTERN = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
DURATION_PATTERN = r"^(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
TRIGGER_KINDS = ("stage", "event", "schedule", "after")
# Every key of a trigger that is not a plugin's kind.
BUILT_IN_KEYS = (*TRIGGER_KINDS, "where", "wait")

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
    """The lifecycle stages a `trigger.stage` may name (engine/lifecycle.py)."""
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def _trigger_schema(schema: dict[str, Any]) -> None:
    """The trigger's JSON Schema with the plugin kinds registered now (rule.schema.json
    is written by `nudge init` / `nudge schema` in the shop's own environment)."""
    from engine.trigger_kinds import describe_plugin_kind, plugin_trigger_kinds

    plugins = plugin_trigger_kinds()
    properties = schema.setdefault("properties", {})
    for kind in plugins:
        properties[kind] = {"type": ["string", "number"], "description": describe_plugin_kind(kind)}
    schema["oneOf"] = [{"required": [kind]} for kind in (*TRIGGER_KINDS, *plugins)]
    schema["examples"] = [
        {"stage": "lapsed_member"},
        {"event": "purchase", "where": "event.amount >= 100"},
        {"schedule": "0 10 * * MON"},
        {"after": "first-purchase-thanks", "wait": "3d"},
    ]


class Trigger(_Model):
    """What makes the rule consider a user: exactly one of stage, event, schedule, after,
    or a trigger kind a plugin registers (`cart_abandoned: 1h`, docs/plugins.md)."""

    model_config = ConfigDict(json_schema_extra=_trigger_schema)

    stage: str | None = Field(
        default=None, description="Fires once each time a user enters this lifecycle stage."
    )
    event: str | None = Field(
        default=None,
        description="Fires for each new event of this type (purchase, signup, or a custom name).",
        pattern=r"^[A-Za-z0-9_.:-]+$",
    )
    where: LocatedText | None = Field(
        default=None, description="With `event`: a condition on the event's fields (event.*)."
    )
    schedule: str | None = Field(
        default=None,
        description="A cron expression (5 fields) in the shop time zone: a sweep over everyone.",
        examples=["0 10 * * MON"],
    )
    after: Slug | None = Field(
        default=None, description="Follows up another rule's actions (its id) after `wait`."
    )
    wait: Duration | None = Field(default=None, description="With `after`: how long to wait.")
    # A plugin's kind and its value, e.g. ("cart_abandoned", "1h"): a rule file writes
    # them as one key (`cart_abandoned: 1h`), moved here by `_plugin_kind` below.
    plugin_kind: SkipJsonSchema[str | None] = Field(default=None, exclude=True)
    plugin_value: SkipJsonSchema[str | None] = Field(default=None, exclude=True)

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_kind(cls, data: Any, handler):
        """A key naming a registered plugin trigger kind becomes (plugin_kind,
        plugin_value); every other key is validated as before, so an unknown key is
        still an error at its own line, with "did you mean" over every kind."""
        if not isinstance(data, dict) or all(key in BUILT_IN_KEYS for key in data):
            return handler(data)  # the common case: the plugin registry is not read
        from engine.trigger_kinds import plugin_trigger_kinds, validate_plugin_value

        plugins = [
            key for key in data if key not in BUILT_IN_KEYS and key in plugin_trigger_kinds()
        ]
        if len(plugins) > 1:
            raise ValueError(f"a trigger needs exactly one kind (got {', '.join(plugins)})")
        # The internal fields are not rule-file keys: renamed, they are unknown keys.
        rest = {
            (f"{key}?" if key in ("plugin_kind", "plugin_value") else key): value
            for key, value in data.items()
            if key not in plugins
        }
        if not plugins:
            return handler(rest)
        kind = plugins[0]
        model = handler({**rest, "plugin_kind": kind})
        try:
            value = validate_plugin_value(kind, data[kind])
        except ValueError as exc:
            error = PydanticCustomError(
                "value_error", "Value error, {reason}", {"reason": str(exc)}
            )
            raise ValidationError.from_exception_data(
                cls.__name__, [{"type": error, "loc": (kind,), "input": data[kind]}]
            ) from None
        return model.model_copy(update={"plugin_value": value})

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, value: str | None) -> str | None:
        stages = stage_names()
        if value is not None and value not in stages:
            hint = did_you_mean(value, stages) or f"; stages: {', '.join(stages)}"
            raise ValueError(f"unknown stage {value!r}{hint}")
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            validate_cron(value)
        return value

    @field_validator("where")
    @classmethod
    def _where_needs_event(cls, value: LocatedText | None, info: ValidationInfo):
        if value is not None and info.data.get("event") is None:
            raise ValueError("'where' filters the events of an `event` trigger; add 'event: ...'")
        return value

    @field_validator("wait")
    @classmethod
    def _wait_needs_after(cls, value: timedelta | None, info: ValidationInfo):
        if value is not None and info.data.get("after") is None:
            raise ValueError("'wait' belongs to an `after` trigger; add 'after: <rule id>'")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        given = [kind for kind in TRIGGER_KINDS if getattr(self, kind) is not None]
        if self.plugin_kind is not None:
            given.append(self.plugin_kind)
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            from engine.trigger_kinds import plugin_trigger_kinds

            kinds = ", ".join((*TRIGGER_KINDS, *plugin_trigger_kinds()))
            raise ValueError(f"a trigger needs exactly one of {kinds} ({found})")
        if self.after is not None and self.wait is None:
            raise ValueError("an `after` trigger needs 'wait' (for example wait: 3d)")
        return self

    @property
    def kind(self) -> str:
        """stage | event | schedule | after | a plugin's kind."""
        if self.plugin_kind is not None:
            return self.plugin_kind
        return next(kind for kind in TRIGGER_KINDS if getattr(self, kind) is not None)

    @property
    def value(self) -> str:
        """The stage, event type, cron expression, followed rule id or plugin value."""
        if self.plugin_kind is not None:
            return self.plugin_value or ""
        return getattr(self, self.kind)

    @classmethod
    def accepted_keys(cls) -> list[str]:
        """The keys a rule file may write here ("did you mean" choices)."""
        from engine.trigger_kinds import plugin_trigger_kinds

        return [*BUILT_IN_KEYS, *plugin_trigger_kinds()]


def validate_cron(expression: str) -> None:
    """Raise ValueError unless `expression` is a 5-field cron APScheduler accepts.

    The time zone does not change validity; the daemon reads it in the shop zone.
    """
    from engine.scheduling import cron_trigger

    try:
        cron_trigger(expression, ZoneInfo("UTC"))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"invalid cron expression {expression!r}: {exc} "
            "(5 fields: minute hour day-of-month month day-of-week, e.g. '0 10 * * MON')"
        ) from None


class Flight(_Model):
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


class SendWindow(_Model):
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


class UserCap(_Model):
    max: Annotated[int, Strict(), Field(ge=1, description="At most this many times...")]
    per: Duration = Field(description="...in any window this long.")


class Caps(_Model):
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


class Variant(_Model):
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


class Experiment(_Model):
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


class Attribution(_Model):
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


class RuleFile(_Model):
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
