"""The whitelist of functions a condition may call: name, parameters, result type.

Functions that read other tables (count, sum, received, has_tag) compile here to
correlated subqueries joined on user_id, so the database does the work for every
user at once. Functions whose meaning depends on what they are compared with
(days_since, hours_since) or that read the catalog (is_set, in_segment) are
compiled by engine.conditions.compiler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import ColumnElement

from engine.conditions.context import CompileContext
from engine.conditions.nodes import Call, Literal, Type
from engine.store.people import Event, UserTag
from engine.store.planning import Decision
from engine.store.reach import reached
from engine.store.types import Money

events = Event.__table__
user_tags = UserTag.__table__
decisions = Decision.__table__


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter. `kind`: string (a quoted literal), duration (7d or "7d"),
    timestamp (any timestamp expression), field (a field name) or anchor (the quoted
    name of an instant the window starts at: only "trigger" so far)."""

    name: str
    kind: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    params: tuple[Param, ...]
    returns: Type
    summary: str
    example: str
    # (call, ctx) -> SQL value; None when the compiler handles the function itself.
    compile: Callable[[Call, CompileContext], ColumnElement] | None = None

    @property
    def signature(self) -> str:
        parts = [p.name if p.required else f"{p.name}=..." for p in self.params]
        return f"{self.name}({', '.join(parts)})"


def _string(call: Call, name: str) -> str:
    node = call.argument(name)
    assert isinstance(node, Literal) and isinstance(node.value, str)
    return node.value


def _within(call: Call) -> timedelta | None:
    node = call.argument("within")
    return None if node is None else node.value


def _since_trigger(call: Call) -> bool:
    node = call.argument("since")
    return node is not None and node.value == "trigger"


def _window(column: ColumnElement, ctx: CompileContext, call: Call) -> list:
    """(now - within, now], and after the trigger with since="trigger".

    Never anything after T (DESIGN invariant 5). "Since the trigger" is strictly after
    the occurrence that started the chain (the triggering event itself is not counted),
    a window anchored to the user's own occurrence rather than sliding with T: a
    reminder stopped by a purchase stays stopped however late it is looked at.
    """
    conditions = [column <= ctx.now]
    within = _within(call)
    if within is not None:
        conditions.append(column > ctx.now - within)
    if _since_trigger(call):
        if ctx.trigger_at is None:
            raise TriggerWindowUnavailable()
        conditions.append(column > ctx.trigger_at)
    return conditions


class TriggerWindowUnavailable(ValueError):
    """since="trigger" compiled where no occurrence is at hand (e.g. a segment used
    outside a rule, or audience exits): the callers that have one pass `trigger_at`."""

    def __init__(self) -> None:
        super().__init__('since="trigger" needs a triggering occurrence here')


def event_rows(call: Call, ctx: CompileContext, event_type: str):
    """(alias, WHERE clauses) of the user's events of `event_type` in the window."""
    # A fresh alias per call: the outer query may itself read `events` (the trigger).
    alias = events.alias()
    where = [
        alias.c.user_id == ctx.users.c.id,
        alias.c.type == event_type,
        *_window(alias.c.occurred_at, ctx, call),
    ]
    return alias, where


def compile_count(call: Call, ctx: CompileContext) -> ColumnElement:
    alias, where = event_rows(call, ctx, _string(call, "event_type"))
    return sa.select(sa.func.count()).select_from(alias).where(*where).scalar_subquery()


def compile_count_exists(call: Call, ctx: CompileContext) -> ColumnElement:
    """count(...) >= 1 as EXISTS: stops at the first row instead of counting them all."""
    alias, where = event_rows(call, ctx, _string(call, "event_type"))
    return sa.exists().select_from(alias).where(*where)


def sum_event_type(spec: str) -> str | None:
    """'purchase.amount' -> 'purchase'; None when it does not name an amount."""
    event_type, dot, column = spec.rpartition(".")
    return event_type if dot and event_type and column == "amount" else None


def compile_sum(call: Call, ctx: CompileContext) -> ColumnElement:
    event_type = sum_event_type(_string(call, "amount"))
    assert event_type is not None
    alias, where = event_rows(call, ctx, event_type)
    total = sa.func.coalesce(sa.func.sum(alias.c.amount), 0)
    return sa.select(sa.type_coerce(total, Money)).where(*where).scalar_subquery()


def compile_received(call: Call, ctx: CompileContext) -> ColumnElement:
    """Planned for the user, with an action that reached them or is on its way: a
    message that was skipped (unsubscribed, capped...) or went dead was not received."""
    alias = decisions.alias()
    return sa.exists().where(
        alias.c.user_id == ctx.users.c.id,
        alias.c.rule_id == _string(call, "rule_id"),
        alias.c.outcome == "planned",
        *_window(alias.c.decided_at, ctx, call),
        reached(alias.c.id),
    )


def compile_has_tag(call: Call, ctx: CompileContext) -> ColumnElement:
    alias = user_tags.alias()
    return sa.exists().where(alias.c.user_id == ctx.users.c.id, alias.c.tag == _string(call, "tag"))


WITHIN = Param("within", "duration", required=False)
SINCE = Param("since", "anchor", required=False)

FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec(
            "days_since",
            (Param("timestamp", "timestamp"),),
            Type.NUMBER,
            "days (fractional) from the timestamp to now; compare it with a number",
            "days_since(last_purchase_at) > 60",
        ),
        FunctionSpec(
            "hours_since",
            (Param("timestamp", "timestamp"),),
            Type.NUMBER,
            "hours (fractional) from the timestamp to now; compare it with a number",
            "hours_since(event.occurred_at) < 2",
        ),
        FunctionSpec(
            "is_set",
            (Param("field", "field"),),
            Type.BOOL,
            "the field has a value (for text: not empty)",
            "is_set(phone)",
        ),
        FunctionSpec(
            "count",
            (Param("event_type", "string"), WITHIN, SINCE),
            Type.NUMBER,
            "number of the user's events of that type in (now - within, now]; "
            'with since="trigger", only those after the rule\'s trigger',
            'count("visit", within="7d") >= 3',
            compile_count,
        ),
        FunctionSpec(
            "sum",
            (Param("amount", "string"), WITHIN, SINCE),
            Type.NUMBER,
            "total amount (shop currency) of the user's events of that type in "
            '(now - within, now]; with since="trigger", only those after the trigger',
            'sum("purchase.amount", within="30d") >= 500',
            compile_sum,
        ),
        FunctionSpec(
            "received",
            (Param("rule_id", "string"), WITHIN, SINCE),
            Type.BOOL,
            "a rule's action reached the user (sent, or planned and on its way) in "
            "(now - within, now]; skipped and dead actions do not count",
            'not received("welcome-email", within="14d")',
            compile_received,
        ),
        FunctionSpec(
            "has_tag",
            (Param("tag", "string"),),
            Type.BOOL,
            "the user carries the tag",
            'has_tag("wholesale")',
            compile_has_tag,
        ),
        FunctionSpec(
            "in_segment",
            (Param("name", "string"),),
            Type.BOOL,
            "the user matches the named segment of rules/segments.yaml",
            'in_segment("high_value")',
        ),
    )
}

# Units of the *_since functions.
SINCE_UNITS = {"days_since": timedelta(days=1), "hours_since": timedelta(hours=1)}
