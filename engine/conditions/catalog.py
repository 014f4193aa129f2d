"""The fields a condition may read, with their types, per trigger kind.

Field kinds (docs/conditions.md has an example of each):
- user fields: columns of `users` (engine/store/people.py User);
- profile fields: the aggregates of engine/store/profiles.py PROFILE_COLUMNS;
- `stage`: the lifecycle stage (values: engine.lifecycle.STAGES);
- `attributes.<key>`: a value in the user's free-form JSON attributes;
- `event.<field>` and `event.properties.<key>`: the triggering event, only in rules
  whose trigger is an event.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from engine.conditions.errors import ConditionError
from engine.conditions.nodes import Node, Type
from engine.lifecycle import STAGES

TRIGGER_KINDS = ("stage", "event", "schedule", "after", "segment")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One readable field. `table` says where the compiler finds `column`."""

    name: str
    type: Type
    table: str  # users | profiles | stage | event
    column: str
    nullable: bool = True
    # Aggregates that are 0, not unknown, for a user without events (no profile row).
    zero_when_missing: bool = False
    # Allowed values of a string field (checked against literals, with "did you mean").
    values: tuple[str, ...] = ()
    # Keys inside a JSON document column (attributes.*, event.properties.*).
    json_path: tuple[str, ...] = ()
    description: str = ""


def _user(name: str, type_: Type, description: str, nullable: bool = True) -> FieldSpec:
    return FieldSpec(name, type_, "users", name, nullable=nullable, description=description)


USER_FIELDS = (
    _user("id", Type.STRING, "the shop's own user id", nullable=False),
    _user("email", Type.STRING, "email address"),
    _user("phone", Type.STRING, "phone number"),
    _user("name", Type.STRING, "display name"),
    _user("country", Type.STRING, "ISO 3166 two-letter country code, e.g. CN"),
    _user("timezone", Type.STRING, "IANA time zone, e.g. Asia/Shanghai"),
    _user("locale", Type.STRING, "locale, e.g. zh-CN"),
    _user("member_tier", Type.STRING, "membership tier, e.g. gold"),
    _user("member_since", Type.TIMESTAMP, "when the user became a member"),
    _user("email_opt_in", Type.BOOL, "consented to email", nullable=False),
    _user("sms_opt_in", Type.BOOL, "consented to SMS", nullable=False),
    _user("ads_opt_in", Type.BOOL, "consented to ad audiences", nullable=False),
    _user("unsubscribed_at", Type.TIMESTAMP, "when the user unsubscribed from everything"),
)


def _profile(name: str, type_: Type, description: str, zero: bool = False) -> FieldSpec:
    # A user without events has no profile row: counts and money are then 0, while
    # timestamps and averages stay unknown (a comparison with them is false).
    return FieldSpec(
        name,
        type_,
        "profiles",
        name,
        nullable=not zero,
        zero_when_missing=zero,
        description=description,
    )


PROFILE_FIELDS = (
    _profile("first_seen_at", Type.TIMESTAMP, "first event of any type"),
    _profile("last_seen_at", Type.TIMESTAMP, "latest event of any type"),
    _profile("signup_at", Type.TIMESTAMP, "first signup event"),
    _profile("first_purchase_at", Type.TIMESTAMP, "first purchase"),
    _profile("last_purchase_at", Type.TIMESTAMP, "latest purchase"),
    _profile("last_visit_at", Type.TIMESTAMP, "latest visit"),
    _profile("purchase_count", Type.NUMBER, "number of purchases", zero=True),
    _profile("refund_count", Type.NUMBER, "number of refunds", zero=True),
    _profile("total_spent", Type.NUMBER, "purchases minus refunds", zero=True),
    _profile("avg_order_value", Type.NUMBER, "total_spent / purchase_count"),
    _profile("event_count", Type.NUMBER, "number of events of any type", zero=True),
)


def _event(name: str, type_: Type, description: str, nullable: bool = True) -> FieldSpec:
    return FieldSpec(
        f"event.{name}", type_, "event", name, nullable=nullable, description=description
    )


EVENT_FIELDS = (
    _event("type", Type.STRING, "event type, e.g. purchase", nullable=False),
    _event("occurred_at", Type.TIMESTAMP, "when it happened", nullable=False),
    _event("amount", Type.NUMBER, "purchase or refund amount"),
    _event("currency", Type.STRING, "ISO 4217 currency code"),
    _event("order_id", Type.STRING, "the shop's order id"),
    _event("coupon_code", Type.STRING, "coupon used in the order"),
    *(
        _event(f"utm_{part}", Type.STRING, f"utm_{part} of the visit")
        for part in ("source", "medium", "campaign", "content", "term")
    ),
)

# JSON documents: the prefix, then where the document lives.
JSON_DOCUMENTS = {
    "attributes": FieldSpec("attributes", Type.JSON, "users", "attributes"),
    "event.properties": FieldSpec("event.properties", Type.JSON, "event", "properties"),
}


@dataclass(frozen=True)
class Catalog:
    """What a condition may read, for one kind of trigger."""

    trigger: str
    fields: Mapping[str, FieldSpec]
    stages: tuple[str, ...] = STAGES
    # Checked named segments (name -> typed expression), see checker.check_segments.
    segments: Mapping[str, Node] = field(default_factory=dict)
    # Known rule ids, for received(); None = do not check.
    rule_ids: frozenset[str] | None = None

    @classmethod
    def for_trigger(
        cls,
        kind: str,
        *,
        segments: Mapping[str, Node] | None = None,
        rule_ids: frozenset[str] | set[str] | None = None,
        stages: tuple[str, ...] = STAGES,
    ) -> Catalog:
        """The catalog of a rule triggered by `kind` (stage, event, schedule, after).

        `segment` is the catalog of named segments: like a schedule, no event fields;
        so is a plugin's trigger kind (its occurrences carry no event).
        """
        from engine.trigger_kinds import plugin_trigger_kinds

        if kind not in TRIGGER_KINDS and kind not in plugin_trigger_kinds():
            raise ValueError(f"unknown trigger kind {kind!r}; expected one of {TRIGGER_KINDS}")
        stage = FieldSpec(
            "stage",
            Type.STRING,
            "stage",
            "stage",
            values=stages,
            description="lifecycle stage at T",
        )
        specs = [*USER_FIELDS, *PROFILE_FIELDS, stage]
        if kind == "event":
            specs += EVENT_FIELDS
        return cls(
            trigger=kind,
            fields={spec.name: spec for spec in specs},
            stages=stages,
            segments=dict(segments or {}),
            rule_ids=frozenset(rule_ids) if rule_ids is not None else None,
        )

    def with_segments(self, segments: Mapping[str, Node]) -> Catalog:
        return replace(self, segments=dict(segments))

    @property
    def allows_event_fields(self) -> bool:
        return self.trigger == "event"

    def resolve(self, name: str, offset: int, length: int) -> FieldSpec:
        """The spec of field `name`, or a ConditionError saying what to write instead."""
        if name in self.fields:
            return self.fields[name]
        for prefix, document in JSON_DOCUMENTS.items():
            if name.startswith(prefix + "."):
                if document.table == "event" and not self.allows_event_fields:
                    raise self._not_event(name, offset, length)
                keys = tuple(name[len(prefix) + 1 :].split("."))
                return replace(document, name=name, json_path=keys, description="")
        raise self._unknown(name, offset, length)

    def _not_event(self, name: str, offset: int, length: int) -> ConditionError:
        return ConditionError(
            f"{name} is only available in rules triggered by an event "
            f"(this condition's trigger is {self.trigger!r})",
            offset,
            length,
        )

    def _unknown(self, name: str, offset: int, length: int) -> ConditionError:
        if name in ("attributes", "event.properties"):
            return ConditionError(f"{name} needs a key, as in {name}.vip_score", offset, length)
        if name.startswith("event.") or name == "event":
            if not self.allows_event_fields:
                return self._not_event(name, offset, length)
            if name == "event":
                return ConditionError(
                    "event needs a field, as in event.amount or event.type", offset, length
                )
        if name in ("True", "False", "TRUE", "FALSE"):
            return ConditionError(f"write {name.lower()} in lower case", offset, length)
        if name in ("None", "NULL", "null"):
            return ConditionError(
                "there is no null value: use is_set(field) or not is_set(field)", offset, length
            )
        choices = [*self.fields, "now"]
        return ConditionError(
            f"unknown field {name!r}{did_you_mean(name, choices)}", offset, length
        )


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
