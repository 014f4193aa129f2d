"""Type-checking: an untyped tree + a catalog -> a typed tree, or a located error.

Runs when a rule loads, so that every mistake a marketer can make in a condition
(a misspelt field or stage, a string compared with a number, an event field in a
scheduled rule...) is reported before anything is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta

from engine.conditions import nodes as n
from engine.conditions.catalog import Catalog, did_you_mean
from engine.conditions.errors import ConditionError
from engine.conditions.functions import FUNCTIONS, SINCE_UNITS, Param, sum_event_type
from engine.conditions.nodes import TYPE_NAMES, Type
from engine.conditions.parser import parse_condition
from engine.durations import parse_duration

ORDERING = ("<", "<=", ">", ">=")
# Types an attribute (JSON) value can take from what it is compared with.
JSON_TYPES = (Type.NUMBER, Type.STRING, Type.BOOL)


def check_condition(text: str, *, catalog: Catalog) -> n.Node:
    """Parse and type-check one condition; the typed tree, or ConditionError."""
    return check_tree(parse_condition(text), catalog=catalog)


def check_tree(tree: n.Node, *, catalog: Catalog) -> n.Node:
    return _Checker(catalog).condition(tree)


def _error(message: str, node: n.Node) -> ConditionError:
    return ConditionError(message, node.offset, node.length)


def _span(first: n.Node, last: n.Node) -> tuple[int, int]:
    return first.offset, last.offset + last.length - first.offset


def _described(node: n.Node) -> str:
    return f"{node.source} ({TYPE_NAMES[node.type]})"


def is_since(node: n.Node) -> bool:
    return isinstance(node, n.Call) and node.name in SINCE_UNITS


def _is_number_literal(node: n.Node) -> bool:
    return isinstance(node, n.Literal) and node.type is Type.NUMBER


class _Checker:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def condition(self, node: n.Node) -> n.Node:
        """A node used as true/false: the whole condition, and/or/not operands."""
        typed = self.check(node)
        if typed.type is Type.JSON:
            # A bare attribute is a condition when it holds true: `attributes.vip`.
            return replace(typed, type=Type.BOOL)
        if typed.type is not Type.BOOL:
            hint = {
                Type.NUMBER: f", as in {node.source} > 0",
                Type.TIMESTAMP: f", as in {node.source} < now - 30d",
                Type.STRING: f', as in {node.source} == "..."',
            }.get(typed.type, "")
            raise _error(
                f"{node.source} is {TYPE_NAMES[typed.type]}, not true/false: compare it{hint}",
                node,
            )
        return typed

    def check(self, node: n.Node) -> n.Node:
        method = getattr(self, f"_{type(node).__name__.lower()}")
        return method(node)

    # Leaves

    def _literal(self, node: n.Literal) -> n.Node:
        value = node.value
        if value is None:
            raise _error("there is no null value: use is_set(field) or not is_set(field)", node)
        if isinstance(value, bool):
            kind = Type.BOOL
        elif isinstance(value, str):
            kind = Type.STRING
        elif isinstance(value, timedelta):
            kind = Type.DURATION
        else:
            kind = Type.NUMBER
        return replace(node, type=kind)

    def _listliteral(self, node: n.ListLiteral) -> n.Node:
        raise _error('a list can only follow in or not in, as in member_tier in ["gold"]', node)

    def _field(self, node: n.Field) -> n.Node:
        if node.name in FUNCTIONS:
            spec = FUNCTIONS[node.name]
            raise _error(f"{node.name} is a function: call it, as in {spec.example}", node)
        spec = self.catalog.resolve(node.name, node.offset, node.length)
        return replace(node, type=spec.type)

    def _now(self, node: n.Now) -> n.Node:
        return replace(node, type=Type.TIMESTAMP)

    def _negate(self, node: n.Negate) -> n.Node:
        raise _error("only a number can be negated, as in -5", node)

    def _arith(self, node: n.Arith) -> n.Node:
        left, right = self.check(node.left), self.check(node.right)
        if not _is_now_based(left):
            hint = (
                f"; compare {left.source} with now - 30d, or use days_since({left.source})"
                if left.type is Type.TIMESTAMP
                else ""
            )
            raise _error(
                f"only now can be shifted, as in now - 30d: {node.source} is not allowed{hint}",
                node,
            )
        if right.type is not Type.DURATION:
            raise _error(
                f"now can only be shifted by a duration such as 30d, not by {_described(right)}",
                right,
            )
        return replace(node, left=left, right=right, type=Type.TIMESTAMP)

    # Boolean structure

    def _and(self, node: n.And) -> n.Node:
        return replace(node, items=tuple(self.condition(i) for i in node.items), type=Type.BOOL)

    def _or(self, node: n.Or) -> n.Node:
        return replace(node, items=tuple(self.condition(i) for i in node.items), type=Type.BOOL)

    def _not(self, node: n.Not) -> n.Node:
        return replace(node, operand=self.condition(node.operand), type=Type.BOOL)

    # Comparisons

    def _compare(self, node: n.Compare) -> n.Node:
        operands = [self.check(operand) for operand in node.operands]
        operands = self._resolve_json(operands)
        for index, op in enumerate(node.ops):
            left, right = operands[index], operands[index + 1]
            self._check_pair(left, op, right, node.op_offsets[index])
        return replace(node, operands=tuple(operands), type=Type.BOOL)

    def _resolve_json(self, operands: list[n.Node]) -> list[n.Node]:
        """An attribute takes the type of its nearest neighbour that has one."""
        resolved = list(operands)
        for index, operand in enumerate(operands):
            if operand.type is not Type.JSON:
                continue
            neighbours = [
                other
                for other in (
                    operands[index - 1] if index else None,
                    operands[index + 1] if index + 1 < len(operands) else None,
                )
                if other is not None and other.type is not Type.JSON
            ]
            if not neighbours:
                raise _error(
                    f'compare {operand.source} with a value, as in {operand.source} == "gold"',
                    operand,
                )
            kind = neighbours[0].type
            if kind not in JSON_TYPES:
                raise _error(
                    f"{operand.source} can only be compared with a number, a string or "
                    f"true/false, not {_described(neighbours[0])}",
                    neighbours[0],
                )
            resolved[index] = replace(operand, type=kind)
        return resolved

    def _check_pair(self, left: n.Node, op: str, right: n.Node, op_offset: int) -> None:
        offset, length = _span(left, right)
        for since, other in ((left, right), (right, left)):
            if is_since(since):
                if op in ("==", "!="):
                    raise ConditionError(
                        f"{since.name}() counts fractional time, so {op} is almost never "
                        f"true: use a range, as in 3 <= {since.source} < 4",
                        op_offset,
                        len(op),
                    )
                if not _is_number_literal(other):
                    raise _error(
                        f"{since.name}() can only be compared with a number, as in "
                        f"{since.source} > 30; {other.source} is not a number",
                        other,
                    )
        if left.type is not right.type:
            raise ConditionError(
                f"cannot compare {_described(left)} with {_described(right)}"
                + _mismatch_hint(left, right),
                offset,
                length,
            )
        if op in ORDERING and left.type is Type.BOOL:
            raise ConditionError(
                f"true/false values cannot be ordered with {op}: use == or !=", op_offset, len(op)
            )
        if op in ORDERING and left.type is Type.STRING:
            raise ConditionError(
                f"text cannot be ordered with {op}: use ==, != or in [...]", op_offset, len(op)
            )
        for field, other in ((left, right), (right, left)):
            self._check_value(field, other)

    def _check_value(self, field: n.Node, value: n.Node) -> None:
        """A literal compared with a field of known values (stage) must be one of them."""
        if not isinstance(field, n.Field) or not isinstance(value, n.Literal):
            return
        allowed = self.catalog.resolve(field.name, field.offset, field.length).values
        if allowed and value.value not in allowed:
            raise _error(
                f"unknown {field.name} {value.value!r}{did_you_mean(str(value.value), allowed)}; "
                f"expected one of: {', '.join(allowed)}",
                value,
            )

    def _in(self, node: n.In) -> n.Node:
        item = self.check(node.item)
        if is_since(item):
            raise _error(
                f"{item.name}() can only be compared with a number, as in {item.source} > 30",
                item,
            )
        items = []
        for option in node.options.items:
            if not isinstance(option, n.Literal):
                raise _error(
                    f'a list holds values such as "gold" or 3, not {option.source}', option
                )
            items.append(self._literal(option))
        if item.type is Type.JSON:
            if not items:
                raise _error(f"compare {item.source} with a non-empty list", node.options)
            kind = items[0].type
            if kind not in JSON_TYPES:
                raise _error(
                    f"{item.source} can only be compared with numbers, strings or true/false",
                    items[0],
                )
            item = replace(item, type=kind)
        for option in items:
            if option.type is not item.type:
                raise _error(
                    f"cannot look for {_described(item)} in a list holding "
                    f"{option.source} ({TYPE_NAMES[option.type]})",
                    option,
                )
            self._check_value(item, option)
        options = replace(node.options, items=tuple(items), type=Type.LIST)
        return replace(node, item=item, options=options, type=Type.BOOL)

    # Functions

    def _call(self, node: n.Call) -> n.Node:
        spec = FUNCTIONS.get(node.name)
        if spec is None:
            known = self.catalog.fields
            if node.name in known:
                message = f"{node.name} is a field, not a function: remove the parentheses"
            else:
                message = f"unknown function {node.name!r}{did_you_mean(node.name, FUNCTIONS)}"
            raise ConditionError(message, node.offset, node.name_length)
        bound: dict[str, n.Node] = {}
        for index, arg in enumerate(node.args):
            if index >= len(spec.params):
                count = len(spec.params)
                raise _error(
                    f"{spec.name}() takes at most {count} argument{'s' if count > 1 else ''}: "
                    f"{spec.signature}; got {len(node.args) + len(node.kwargs)}",
                    arg,
                )
            bound[spec.params[index].name] = arg
        names = {param.name: param for param in spec.params}
        for keyword in node.kwargs:
            if keyword.name not in names:
                raise ConditionError(
                    f"{spec.name}() has no argument {keyword.name!r}"
                    f"{did_you_mean(keyword.name, names)}; it takes {spec.signature}",
                    keyword.offset,
                    len(keyword.name),
                )
            if keyword.name in bound:
                raise ConditionError(
                    f"{spec.name}() got {keyword.name!r} twice", keyword.offset, len(keyword.name)
                )
            bound[keyword.name] = keyword.value
        arguments: list[tuple[str, n.Node | None]] = []
        for param in spec.params:
            if param.name not in bound:
                if param.required:
                    raise _error(
                        f"{spec.name}() needs its {param.name} argument, as in {spec.example}",
                        node,
                    )
                arguments.append((param.name, None))
                continue
            arguments.append((param.name, self._argument(spec.name, param, bound[param.name])))
        typed = replace(node, arguments=tuple(arguments), type=spec.returns)
        self._check_call(typed)
        return typed

    def _argument(self, function: str, param: Param, node: n.Node) -> n.Node:
        if param.kind == "field":
            if not isinstance(node, n.Field):
                raise _error(f"{function}() takes a field name, as in {function}(phone)", node)
            return self._field(node)
        if param.kind == "timestamp":
            typed = self.check(node)
            if typed.type is not Type.TIMESTAMP:
                raise _error(
                    f"{function}() takes a timestamp such as last_purchase_at, "
                    f"not {_described(typed)}",
                    node,
                )
            return typed
        if param.kind == "string":
            if not (isinstance(node, n.Literal) and isinstance(node.value, str)):
                raise _error(
                    f"{function}(): {param.name} must be a quoted string, not {node.source}", node
                )
            if not node.value.strip():
                raise _error(f"{function}(): {param.name} must not be empty", node)
            return replace(node, type=Type.STRING)
        if param.kind == "anchor":
            anchors = ("trigger",)
            if not (isinstance(node, n.Literal) and node.value in anchors):
                raise _error(
                    f'{function}(): {param.name} must be "trigger" (the occurrence that '
                    f'started the rule), as in {function}(..., since="trigger"); '
                    f"not {node.source}",
                    node,
                )
            return replace(node, type=Type.STRING)
        # duration: 7d, or "7d" as a string
        if isinstance(node, n.Literal) and isinstance(node.value, timedelta):
            return replace(node, type=Type.DURATION)
        if isinstance(node, n.Literal) and isinstance(node.value, str):
            try:
                value = parse_duration(node.value)
            except ValueError as exc:
                raise _error(str(exc), node) from None
            return replace(node, value=value, type=Type.DURATION)
        raise _error(
            f'{function}(): {param.name} must be a duration such as 7d or "7d", not {node.source}',
            node,
        )

    def _check_call(self, call: n.Call) -> None:
        if call.name == "sum":
            amount = call.argument("amount")
            if sum_event_type(amount.value) is None:
                raise _error(
                    'sum() adds up event amounts: write "purchase.amount" or '
                    f'"refund.amount", not {amount.source}',
                    amount,
                )
        elif call.name == "received":
            rule = call.argument("rule_id")
            known = self.catalog.rule_ids
            if known is not None and rule.value not in known:
                raise _error(f"unknown rule {rule.value!r}{did_you_mean(rule.value, known)}", rule)
        elif call.name == "in_segment":
            name = call.argument("name")
            segments = self.catalog.segments
            if name.value not in segments:
                if not segments:
                    message = f"unknown segment {name.value!r}: rules/segments.yaml defines none"
                else:
                    message = f"unknown segment {name.value!r}{did_you_mean(name.value, segments)}"
                raise _error(message, name)


def _is_now_based(node: n.Node) -> bool:
    if isinstance(node, n.Now):
        return True
    return isinstance(node, n.Arith) and _is_now_based(node.left)


def _mismatch_hint(left: n.Node, right: n.Node) -> str:
    kinds = {left.type, right.type}
    if kinds == {Type.TIMESTAMP, Type.NUMBER}:
        return ": use days_since(...) to count days, as in days_since(last_purchase_at) > 30"
    if kinds == {Type.TIMESTAMP, Type.DURATION}:
        return ": compare a timestamp with now - 30d, or use days_since(...) > 30"
    if kinds == {Type.NUMBER, Type.STRING}:
        text = left if left.type is Type.STRING else right
        if isinstance(text, n.Literal) and re.fullmatch(r"-?\d+(\.\d+)?", str(text.value)):
            return ": remove the quotes around the number"
    return ""


def check_segments(
    texts: Mapping[str, str], *, stages: tuple[str, ...] | None = None
) -> dict[str, n.Node]:
    """Parse and check named segments (rules/segments.yaml): name -> typed tree.

    Segments may use each other through in_segment(); a cycle is an error located at
    the in_segment() call that closes it. Errors carry `segment=<name>`.
    """
    catalog = Catalog.for_trigger("segment", **({"stages": stages} if stages else {}))
    parsed: dict[str, n.Node] = {}
    for name, text in texts.items():
        try:
            parsed[name] = parse_condition(text)
        except ConditionError as exc:
            exc.segment = name
            raise
    uses = {name: _segment_calls(tree) for name, tree in parsed.items()}
    checked: dict[str, n.Node] = {}
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in checked:
            return
        visiting.append(name)
        for used, call in uses[name]:
            if used in visiting:
                path = " -> ".join([*visiting[visiting.index(used) :], used])
                raise ConditionError(
                    f"segment {used!r} uses itself: {path}",
                    call.offset,
                    call.length,
                    segment=name,
                )
            if used in parsed:
                visit(used)
        visiting.pop()
        try:
            checked[name] = check_tree(parsed[name], catalog=catalog.with_segments(checked))
        except ConditionError as exc:
            exc.segment = name
            raise

    for name in parsed:
        visit(name)
    return checked


def _segment_calls(tree: n.Node) -> list[tuple[str, n.Call]]:
    found = []
    for node in n.walk(tree):
        if isinstance(node, n.Call) and node.name == "in_segment" and len(node.args) == 1:
            arg = node.args[0]
            if isinstance(arg, n.Literal) and isinstance(arg.value, str):
                found.append((arg.value, node))
    return found
