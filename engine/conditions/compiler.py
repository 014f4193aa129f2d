"""Typed condition -> SQLAlchemy Core boolean, evaluated by the database for all users.

Semantics (docs/conditions.md "Missing values"):
- A comparison with a missing value (NULL) is false, and `not` of it is true. Every
  predicate is therefore compiled two-valued: `(x IS NOT NULL AND x > :v)`, so that
  SQL's three-valued NOT never silently drops users.
- Time is compared against instants computed in Python from T and bound as
  parameters: `days_since(x) > 60` becomes `x < :bound` with bound = T - 60 days,
  which is sargable and identical on SQLite and PostgreSQL.
- Event, tag and decision lookups are correlated subqueries on user_id, and only see
  rows at or before T (DESIGN invariant 5).

`compile_explain` returns the same predicates clause by clause, plus each leaf
comparison three-valued (NULL = unknown, a missing input) and its operand values,
for `nudge explain`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Select

from engine.conditions import nodes as n
from engine.conditions.catalog import Catalog, FieldSpec
from engine.conditions.checker import is_since
from engine.conditions.context import CompileContext, instant
from engine.conditions.errors import ConditionError
from engine.conditions.functions import FUNCTIONS, SINCE_UNITS, compile_count_exists
from engine.conditions.json_values import json_scalar
from engine.conditions.nodes import Type

_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# a OP b  <=>  b MIRROR[OP] a
_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

# Every field the compiler may meet; which ones a rule may use is the checker's job.
_ALL_FIELDS = Catalog.for_trigger("event")


@dataclass(frozen=True, slots=True)
class _Value:
    """A compiled operand: a Python constant, an SQL expression, or a *_since call."""

    sql: ColumnElement | None = None
    const: Any = None
    nullable: bool = False
    call: n.Call | None = None  # count(...) calls, for the EXISTS shortcut
    since: tuple[_Value, timedelta] | None = None  # (timestamp, unit)

    @property
    def is_const(self) -> bool:
        return self.sql is None and self.since is None


@dataclass(frozen=True)
class ExplainColumn:
    """One column of an explain query.

    role: "clause" (the value the rule uses: TRUE/FALSE), "leaf" (one comparison or
    test: TRUE/FALSE, or NULL = unknown because an input is missing) or "operand"
    (the value a leaf compared). `parent` is the label of the clause of a leaf, or of
    the leaf of an operand. `source` is the text as the rule author wrote it.
    """

    label: str
    source: str
    role: str
    parent: str | None
    column: ColumnElement


def compile_condition(expr: n.Node, ctx: CompileContext) -> ColumnElement[bool]:
    """The typed condition as a two-valued SQL boolean (never NULL)."""
    return _Compiler(ctx).predicate(expr)


def compile_explain(expr: n.Node, ctx: CompileContext) -> list[ExplainColumn]:
    """Clause, leaf and operand columns for one condition (see ExplainColumn)."""
    compiler = _Compiler(ctx)
    columns: list[ExplainColumn] = []
    clauses = expr.items if isinstance(expr, n.And) else (expr,)
    for clause in clauses:
        clause_label = f"c{len(columns)}"
        columns.append(
            ExplainColumn(clause_label, clause.source, "clause", None, compiler.predicate(clause))
        )
        for leaf in _leaves(clause):
            leaf_label = f"c{len(columns)}"
            columns.append(
                ExplainColumn(leaf_label, leaf.source, "leaf", clause_label, compiler.raw(leaf))
            )
            for source, column in compiler.operands(leaf):
                columns.append(
                    ExplainColumn(f"c{len(columns)}", source, "operand", leaf_label, column)
                )
    return columns


def explain_query(expr: n.Node, ctx: CompileContext, user_id: str) -> Select:
    """One row for `user_id` with every ExplainColumn labelled by its `label`."""
    columns = compile_explain(expr, ctx)
    return (
        sa.select(*(c.column.label(c.label) for c in columns))
        .select_from(ctx.from_clause())
        .where(ctx.users.c.id == user_id)
    )


def matching_users(expr: n.Node, ctx: CompileContext) -> Select:
    """SELECT users.id of every user matching the condition at ctx.now."""
    return (
        sa.select(ctx.users.c.id).select_from(ctx.from_clause()).where(compile_condition(expr, ctx))
    )


def _leaves(node: n.Node):
    """The comparisons and tests under and/or/not, in source order."""
    if isinstance(node, n.And | n.Or):
        for item in node.items:
            yield from _leaves(item)
    elif isinstance(node, n.Not):
        yield from _leaves(node.operand)
    else:
        yield node


class _Compiler:
    def __init__(self, ctx: CompileContext):
        self.ctx = ctx
        self.segment_stack: list[str] = []

    # Booleans

    def predicate(self, node: n.Node) -> ColumnElement[bool]:
        """Two-valued: a missing input makes a comparison FALSE, never NULL."""
        return self._boolean(node, guard=True)

    def raw(self, node: n.Node) -> ColumnElement[bool]:
        """Three-valued (for explain): NULL when the leaf reads a missing value."""
        return self._boolean(node, guard=False)

    def _boolean(self, node: n.Node, *, guard: bool) -> ColumnElement[bool]:
        match node:
            case n.And(items=items):
                return sa.and_(*(self._boolean(i, guard=guard) for i in items))
            case n.Or(items=items):
                return sa.or_(*(self._boolean(i, guard=guard) for i in items))
            case n.Not(operand=operand):
                return sa.not_(self._boolean(operand, guard=guard))
            case n.Compare(operands=operands, ops=ops):
                values = [self.value(operand) for operand in operands]
                pairs = [
                    self._compare(values[i], op, values[i + 1], guard=guard)
                    for i, op in enumerate(ops)
                ]
                return pairs[0] if len(pairs) == 1 else sa.and_(*pairs)
            case n.In():
                return self._in(node, guard=guard)
            case n.Literal(value=value):
                return sa.true() if value else sa.false()
            case n.Call():
                return self._bool_call(node)
            case n.Field():
                return self._compare(self.value(node), "==", _Value(const=True), guard=guard)
        raise TypeError(f"not a condition: {node!r}")  # pragma: no cover (the checker)

    def _compare(self, left: _Value, op: str, right: _Value, *, guard: bool) -> ColumnElement:
        if right.since is not None and left.since is None:
            left, op, right = right, _MIRROR[op], left
        if left.since is not None:
            return self._since(left, op, right.const, guard=guard)
        if left.is_const and right.is_const:
            return sa.true() if _OPS[op](left.const, right.const) else sa.false()
        if left.is_const:
            left, op, right = right, _MIRROR[op], left
        if right.is_const and left.call is not None:
            shortcut = _count_shortcut(op, right.const)
            if shortcut is not None:
                exists = compile_count_exists(left.call, self.ctx)
                return exists if shortcut else sa.not_(exists)
        right_operand = _bindable(right.const, left.sql) if right.is_const else right.sql
        comparison = _OPS[op](left.sql, right_operand)
        return _guarded(comparison, [left, right] if guard else [])

    def _since(self, since: _Value, op: str, amount, *, guard: bool) -> ColumnElement:
        """days_since(ts) OP amount  <=>  ts MIRROR[OP] (T - amount days)."""
        timestamp, unit = since.since
        try:
            bound = self.ctx.now - unit * (amount if isinstance(amount, int) else float(amount))
        except OverflowError:
            # Further than any representable instant: compare with -infinity (a huge
            # positive amount) or +infinity (a huge negative one).
            mirrored = _MIRROR[op]
            holds = mirrored in (">", ">=") if amount > 0 else mirrored in ("<", "<=")
            if not holds:
                return sa.false()
            return timestamp.sql.is_not(None) if not timestamp.is_const else sa.true()
        mirrored = _MIRROR[op]
        if timestamp.is_const:
            return sa.true() if _OPS[mirrored](timestamp.const, bound) else sa.false()
        comparison = _OPS[mirrored](timestamp.sql, instant(bound))
        return _guarded(comparison, [timestamp] if guard else [])

    def _in(self, node: n.In, *, guard: bool) -> ColumnElement:
        item = self.value(node.item)
        options = [option.value for option in node.options.items]
        if item.is_const:
            found = item.const in options
            return sa.true() if found != node.negated else sa.false()
        bound = [_bindable(option, item.sql) for option in options]
        test = item.sql.not_in(bound) if node.negated else item.sql.in_(bound)
        return _guarded(test, [item] if guard else [])

    def _bool_call(self, call: n.Call) -> ColumnElement:
        if call.name == "is_set":
            return self._is_set(call.argument("field"))
        if call.name == "in_segment":
            return self._segment(call)
        spec = FUNCTIONS[call.name]
        assert spec.compile is not None
        return spec.compile(call, self.ctx)

    def _is_set(self, field: n.Field) -> ColumnElement:
        spec = self._spec(field)
        if spec.json_path:
            return json_scalar(self._document(spec, field), spec.json_path, None)
        value = self.value(field)
        if not value.nullable:
            return sa.true()
        present = value.sql.is_not(None)
        if field.type is Type.STRING:
            # An empty phone or email is as good as none for a marketer.
            return sa.and_(present, value.sql != "")
        return present

    def _segment(self, call: n.Call) -> ColumnElement:
        name = call.argument("name").value
        tree = self.ctx.segments.get(name)
        if tree is None:
            raise ConditionError(f"unknown segment {name!r}", call.offset, call.length)
        if name in self.segment_stack:  # pragma: no cover (check_segments rejects cycles)
            raise ConditionError(f"segment {name!r} uses itself", call.offset, call.length)
        self.segment_stack.append(name)
        try:
            return self.predicate(tree)
        finally:
            self.segment_stack.pop()

    # Values

    def value(self, node: n.Node) -> _Value:
        match node:
            case n.Literal(value=value):
                return _Value(const=value)
            case n.Now():
                return _Value(const=self.ctx.now)
            case n.Arith(left=left, op=op, right=right):
                base = self.value(left).const
                shift = right.value
                return _Value(const=base + shift if op == "+" else base - shift)
            case n.Field():
                return self._field(node)
            case n.Call(name=name) if name in SINCE_UNITS:
                timestamp = self.value(node.argument("timestamp"))
                return _Value(since=(timestamp, SINCE_UNITS[name]))
            case n.Call(name=name) if FUNCTIONS[name].returns is Type.NUMBER:
                sql = FUNCTIONS[name].compile(node, self.ctx)
                return _Value(sql=sql, call=node if name == "count" else None)
        # A condition used as a value: `has_tag("x") == true`.
        return _Value(sql=self.predicate(node))

    def _spec(self, field: n.Field) -> FieldSpec:
        return _ALL_FIELDS.resolve(field.name, field.offset, field.length)

    def _field(self, field: n.Field) -> _Value:
        spec = self._spec(field)
        if spec.json_path:
            sql = json_scalar(self._document(spec, field), spec.json_path, field.type)
            return _Value(sql=sql, nullable=True)
        if spec.table == "users":
            return _Value(sql=self.ctx.users.c[spec.column], nullable=spec.nullable)
        if spec.table == "profiles":
            column = self.ctx.profiles.c[spec.column]
            if spec.zero_when_missing:
                return _Value(sql=sa.func.coalesce(column, 0), nullable=False)
            return _Value(sql=column, nullable=True)
        if spec.table == "stage":
            if self.ctx.stage is None:
                raise ConditionError(
                    "stage is not available here (no stage column was given)",
                    field.offset,
                    field.length,
                )
            return _Value(sql=self.ctx.stage, nullable=True)
        return _Value(sql=self._event(field).c[spec.column], nullable=spec.nullable)

    def _document(self, spec: FieldSpec, field: n.Field) -> ColumnElement:
        table = self.ctx.users if spec.table == "users" else self._event(field)
        return table.c[spec.column]

    def _event(self, field: n.Field):
        if self.ctx.event is None:
            raise ConditionError(
                f"{field.name} is only available in rules triggered by an event",
                field.offset,
                field.length,
            )
        return self.ctx.event

    # Explain

    def operands(self, leaf: n.Node) -> list[tuple[str, ColumnElement]]:
        """(source, value) of each non-constant operand a leaf reads."""
        if isinstance(leaf, n.Compare):
            nodes = list(leaf.operands)
        elif isinstance(leaf, n.In):
            nodes = [leaf.item]
        elif isinstance(leaf, n.Call) and leaf.name == "is_set":
            nodes = [leaf.argument("field")]
        else:
            return []
        found: dict[str, ColumnElement] = {}
        for node in nodes:
            if is_since(node):
                node = node.argument("timestamp")
            value = self.value(node) if not _is_json_presence(leaf, node) else None
            if value is None or value.is_const or node.source in found:
                continue
            found[node.source] = value.sql
        return list(found.items())


def _is_json_presence(leaf: n.Node, node: n.Node) -> bool:
    """is_set(attributes.x) has no typed value to show."""
    return isinstance(leaf, n.Call) and isinstance(node, n.Field) and node.type is Type.JSON


def _guarded(comparison: ColumnElement, values: list[_Value]) -> ColumnElement:
    guards = [
        value.sql.is_not(None) for value in values if value.nullable and value.sql is not None
    ]
    return sa.and_(*guards, comparison) if guards else comparison


def _bindable(value, against: ColumnElement):
    """A Python constant ready to compare with `against` on both databases."""
    if isinstance(value, datetime):
        return instant(value)
    if isinstance(value, Decimal) and isinstance(against.type, sa.Float):
        return float(value)
    return value


def _count_shortcut(op: str, amount) -> bool | None:
    """count(...) OP amount as EXISTS (True) or NOT EXISTS (False), when it is one."""
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        return None
    if (op == ">=" and amount == 1) or (op == ">" and amount == 0):
        return True
    if (op == "==" and amount == 0) or (op == "<" and amount == 1) or (op == "<=" and amount == 0):
        return False
    return None
