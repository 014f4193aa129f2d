"""Condition text -> untyped expression tree (engine.conditions.nodes). Never evaluated.

The grammar is a small LALR grammar run by `lark` (no recursion while parsing, so no
input can exhaust the stack); the tree is then converted into our own nodes, each
remembering its exact source text and 0-based character offset. Every problem is a
`ConditionError` located at the offending token.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import cache

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from engine.conditions import nodes as n
from engine.conditions.errors import ConditionError
from engine.durations import parse_duration

MAX_LENGTH = 10_000
MAX_DEPTH = 20
MAX_LIST_ITEMS = 1000

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: NOT not_expr -> not_
         | comparison
?comparison: sum_expr
           | sum_expr (COMP_OP sum_expr)+ -> compare
           | sum_expr _IN list -> in_
           | sum_expr NOT _IN list -> not_in
?sum_expr: unary
         | sum_expr (PLUS | MINUS) unary -> arith
?unary: MINUS unary -> neg
      | atom
?atom: NUMBER -> number
     | DURATION -> duration
     | STRING -> string
     | TRUE -> true
     | FALSE -> false
     | NULL -> null
     | NOW -> now
     | NAME (_DOT NAME)* -> field
     | NAME "(" [arguments] ")" -> call
     | "(" or_expr ")"
     | list
list: "[" [or_expr (_COMMA or_expr)* _COMMA?] "]"
arguments: argument (_COMMA argument)* _COMMA?
?argument: or_expr
         | NAME _EQUAL or_expr -> kwarg

_OR: "or"
_AND: "and"
NOT: "not"
_IN: "in"
TRUE: "true"
FALSE: "false"
NULL: "null"
NOW: "now"
_DOT: "."
_COMMA: ","
_EQUAL: "="
PLUS: "+"
MINUS: "-"
COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
DURATION.2: /\d+(\.\d+)?[A-Za-z_]\w*/
NUMBER: /\d+(\.\d+)?/
STRING: /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%ignore /\s+/
"""

# Trees that are one level of nesting of the condition (wrappers such as the
# argument list do not count).
_NESTING = {"or_expr", "and_expr", "not_", "compare", "in_", "not_in", "arith", "neg", "call"}

# What each terminal looks like in "expected ..." messages.
_TERMINALS = {
    "RPAR": "')'",
    "RSQB": "']'",
    "LPAR": "'('",
    "_COMMA": "','",
    "_EQUAL": "'='",
    "COMP_OP": "a comparison (==, !=, <, <=, >, >=)",
    "_AND": "'and'",
    "_OR": "'or'",
    "_IN": "'in'",
    "NOT": "'not'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "_DOT": "'.'",
    "$END": "the end of the condition",
}
_VALUE_STARTS = {"NUMBER", "DURATION", "STRING", "TRUE", "FALSE", "NULL", "NOW", "NAME", "LSQB"}
_OPERATORS = {"COMP_OP", "_AND", "_OR", "_IN", "PLUS"}


@cache
def _lark() -> Lark:
    # The basic lexer, not the contextual one: a keyword must stay a keyword even where
    # only a name could follow ("a and and b" is an error, not a field called "and").
    return Lark(
        GRAMMAR,
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def parse_condition(text: str) -> n.Node:
    """Parse one condition into an untyped tree; raise ConditionError on any problem."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be text, not {type(text).__name__}", 0)
    if len(text) > MAX_LENGTH:
        raise ConditionError(
            f"the condition is {len(text):,} characters long; the limit is {MAX_LENGTH:,}: "
            "split it into several conditions or a named segment",
            MAX_LENGTH,
        )
    if not text.strip():
        raise ConditionError("the condition is empty", 0)
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    _check_depth(tree)
    return _Converter(text).convert(tree)


def _check_depth(tree: Tree | Token) -> None:
    """Reject deep nesting before the (recursive) conversion: iterative on purpose."""
    stack: list[tuple[Tree | Token, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data in _NESTING:
            depth += 1
            if depth > MAX_DEPTH:
                raise ConditionError(
                    f"the condition nests more than {MAX_DEPTH} levels deep: "
                    "split it into named segments",
                    node.meta.start_pos,
                    node.meta.end_pos - node.meta.start_pos,
                )
        stack.extend((child, depth) for child in node.children if child is not None)


def _syntax_error(exc: UnexpectedInput, text: str) -> ConditionError:
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream
        char = text[offset]
        if char in "\"'":
            return ConditionError("unterminated string: close it with " + char, offset)
        hints = {
            "&": "write 'and' instead of '&'",
            "|": "write 'or' instead of '|'",
            "!": "write 'not' instead of '!' (and != for 'not equal')",
            "=": "write == to compare",
        }
        hint = hints.get(char)
        if hint is None and text[offset:].startswith("."):
            hint = "a number needs digits on both sides of the point, like 0.5"
        message = f"unexpected character {char!r}"
        return ConditionError(f"{message}: {hint}" if hint else message, offset)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = set(exc.expected)
        if token.type == "$END":
            offset, length, seen = len(text), 1, "the end of the condition"
        else:
            offset, length, seen = token.start_pos, len(token.value), repr(str(token.value))
        if token.type == "_EQUAL":
            return ConditionError(
                "unexpected '=': write == to compare (a single = only names a function "
                'argument, as in within="7d")',
                offset,
            )
        return ConditionError(
            f"unexpected {seen}; expected {_expectation(expected)}", offset, length
        )
    return ConditionError(f"cannot parse the condition: {exc}", 0)  # pragma: no cover


def _expectation(expected: set[str]) -> str:
    if expected & _VALUE_STARTS and expected != {"NAME"}:
        return "a value (a field, number, string, list or function call)"
    if expected == {"NAME"}:
        return "a name"
    if expected & _OPERATORS:
        # LALR merges look-aheads, so the exact set of closers is not trustworthy here.
        return "an operator such as ==, <, in, and, or"
    names = sorted(_TERMINALS.get(name, name) for name in expected)
    return " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " or " + names[-1]


class _Converter:
    """lark tree -> nodes; each node keeps its span of the original text."""

    def __init__(self, text: str):
        self.text = text

    def _span(self, item: Tree | Token) -> dict:
        if isinstance(item, Token):
            start, end = item.start_pos, item.end_pos
        else:
            start, end = item.meta.start_pos, item.meta.end_pos
        return {"offset": start, "length": end - start, "source": self.text[start:end]}

    def convert(self, item: Tree | Token) -> n.Node:
        method = getattr(self, f"_{item.data}")
        return method(item)

    def _or_expr(self, tree: Tree) -> n.Node:
        return n.Or(items=tuple(self.convert(c) for c in tree.children), **self._span(tree))

    def _and_expr(self, tree: Tree) -> n.Node:
        return n.And(items=tuple(self.convert(c) for c in tree.children), **self._span(tree))

    def _not_(self, tree: Tree) -> n.Node:
        return n.Not(operand=self.convert(tree.children[1]), **self._span(tree))

    def _compare(self, tree: Tree) -> n.Node:
        children = tree.children
        return n.Compare(
            operands=tuple(self.convert(c) for c in children[0::2]),
            ops=tuple(str(op) for op in children[1::2]),
            op_offsets=tuple(op.start_pos for op in children[1::2]),
            **self._span(tree),
        )

    def _in_(self, tree: Tree, negated: bool = False) -> n.Node:
        item, options = tree.children[0], tree.children[-1]
        return n.In(
            item=self.convert(item),
            options=self._list(options),
            negated=negated,
            **self._span(tree),
        )

    def _not_in(self, tree: Tree) -> n.Node:
        return self._in_(tree, negated=True)

    def _arith(self, tree: Tree) -> n.Node:
        left, op, right = tree.children
        return n.Arith(
            left=self.convert(left), op=str(op), right=self.convert(right), **self._span(tree)
        )

    def _neg(self, tree: Tree) -> n.Node:
        operand = self.convert(tree.children[1])
        span = self._span(tree)
        # Fold "-5" into a literal so that negative numbers are plain constants.
        if isinstance(operand, n.Literal) and isinstance(operand.value, int | Decimal):
            if not isinstance(operand.value, bool):
                return n.Literal(value=-operand.value, **span)
        return n.Negate(operand=operand, **span)

    def _number(self, tree: Tree) -> n.Node:
        raw = str(tree.children[0])
        value: int | Decimal = Decimal(raw) if "." in raw else int(raw)
        return n.Literal(value=value, **self._span(tree))

    def _duration(self, tree: Tree) -> n.Node:
        token = tree.children[0]
        try:
            value: timedelta = parse_duration(str(token))
        except ValueError as exc:
            raise ConditionError(str(exc), token.start_pos, len(token)) from None
        return n.Literal(value=value, **self._span(tree))

    def _string(self, tree: Tree) -> n.Node:
        return n.Literal(value=_unquote(str(tree.children[0])), **self._span(tree))

    def _true(self, tree: Tree) -> n.Node:
        return n.Literal(value=True, **self._span(tree))

    def _false(self, tree: Tree) -> n.Node:
        return n.Literal(value=False, **self._span(tree))

    def _null(self, tree: Tree) -> n.Node:
        return n.Literal(value=None, **self._span(tree))

    def _now(self, tree: Tree) -> n.Node:
        return n.Now(**self._span(tree))

    def _field(self, tree: Tree) -> n.Node:
        return n.Field(name=".".join(str(part) for part in tree.children), **self._span(tree))

    def _call(self, tree: Tree) -> n.Node:
        name, arguments = tree.children
        args: list[n.Node] = []
        kwargs: list[n.Keyword] = []
        for child in arguments.children if arguments is not None else ():
            if isinstance(child, Tree) and child.data == "kwarg":
                key, value = child.children
                kwargs.append(
                    n.Keyword(name=str(key), offset=key.start_pos, value=self.convert(value))
                )
            elif kwargs:
                raise ConditionError(
                    "a positional argument cannot follow a named one (name=value)",
                    *self._offset_length(child),
                )
            else:
                args.append(self.convert(child))
        return n.Call(
            name=str(name),
            name_length=len(name),
            args=tuple(args),
            kwargs=tuple(kwargs),
            **self._span(tree),
        )

    def _list(self, tree: Tree) -> n.ListLiteral:
        children = [c for c in tree.children if c is not None]
        if len(children) > MAX_LIST_ITEMS:
            raise ConditionError(
                f"the list has {len(children):,} items; the limit is {MAX_LIST_ITEMS:,}: "
                "use a tag (has_tag) or a segment for large groups",
                *self._offset_length(children[MAX_LIST_ITEMS]),
            )
        return n.ListLiteral(items=tuple(self.convert(c) for c in children), **self._span(tree))

    def _offset_length(self, item: Tree | Token) -> tuple[int, int]:
        span = self._span(item)
        return span["offset"], span["length"]


def _unquote(token: str) -> str:
    """Strip the quotes; a backslash keeps the next character as it is (\\" \\' \\\\)."""
    body = token[1:-1]
    out: list[str] = []
    escaped = False
    for char in body:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)
