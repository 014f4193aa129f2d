"""The expression tree of a condition: immutable nodes that remember their source.

The parser builds the nodes with `type=None`; the checker returns a copy with every
node typed. Each node keeps its exact source text and offset so that errors and
`nudge explain` can quote the user's own words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Type(StrEnum):
    BOOL = "bool"
    NUMBER = "number"
    STRING = "string"
    TIMESTAMP = "timestamp"
    DURATION = "duration"
    LIST = "list"
    # A value inside a JSON document (attributes.*, event.properties.*): its type is
    # taken from what it is compared with.
    JSON = "json"
    NULL = "null"


# How types are named in messages: what a marketer calls them.
TYPE_NAMES = {
    Type.BOOL: "true/false",
    Type.NUMBER: "a number",
    Type.STRING: "a string",
    Type.TIMESTAMP: "a timestamp",
    Type.DURATION: "a duration",
    Type.LIST: "a list",
    Type.JSON: "an attribute value",
    Type.NULL: "null",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    offset: int
    length: int
    source: str
    type: Type | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Literal(Node):
    """A number (int or Decimal), string, bool, null or duration (timedelta)."""

    value: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ListLiteral(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Field(Node):
    """A catalog field by its dotted name: `total_spent`, `attributes.vip_score`."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Now(Node):
    """The evaluation instant T."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Arith(Node):
    """`left + right` or `left - right`; the checker allows only now ± duration."""

    left: Node
    op: str
    right: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class Negate(Node):
    operand: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyword:
    name: str
    offset: int
    value: Node


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Node):
    """A function call. After checking, `arguments` holds every parameter by name."""

    name: str
    name_length: int
    args: tuple[Node, ...] = ()
    kwargs: tuple[Keyword, ...] = ()
    arguments: tuple[tuple[str, Node | None], ...] = ()

    def argument(self, name: str) -> Node | None:
        return dict(self.arguments).get(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare(Node):
    """`a < b <= c`: len(ops) == len(operands) - 1, meaning (a < b) and (b <= c)."""

    operands: tuple[Node, ...]
    ops: tuple[str, ...]
    op_offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class In(Node):
    item: Node
    options: ListLiteral
    negated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class And(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Or(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Not(Node):
    operand: Node


Expr = Node


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of `node`, in source order."""
    match node:
        case ListLiteral(items=items) | And(items=items) | Or(items=items):
            return items
        case Arith(left=left, right=right):
            return (left, right)
        case Negate(operand=operand) | Not(operand=operand):
            return (operand,)
        case Call(args=args, kwargs=kwargs):
            return (*args, *(keyword.value for keyword in kwargs))
        case Compare(operands=operands):
            return operands
        case In(item=item, options=options):
            return (item, options)
    return ()


def walk(node: Node):
    """Every node of the tree, parents before children (iterative)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))
