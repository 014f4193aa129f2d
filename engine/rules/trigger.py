"""A rule's `trigger:`: one of the built-in kinds (stage, event, schedule, after) or a
kind a plugin registers (engine/trigger_kinds.py), with its JSON Schema."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from engine.rules.fields import Duration, RuleModel, Slug, did_you_mean, stage_names
from engine.rules.located_text import LocatedText

TRIGGER_KINDS = ("stage", "event", "schedule", "after")
# Every key of a trigger that is not a plugin's kind.
BUILT_IN_KEYS = (*TRIGGER_KINDS, "where", "wait")


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


class Trigger(RuleModel):
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
