"""Parser: valid syntax gives the expected tree; invalid syntax a located, exact error."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from engine.conditions import ConditionError, parse_condition
from engine.conditions import nodes as n


def test_precedence_and_spans():
    tree = parse_condition('a >= 5 and not b in [1, -2.5,] or f("x", within=7d)')
    assert isinstance(tree, n.Or)
    left, call = tree.items
    assert isinstance(left, n.And)
    compare, negation = left.items
    assert (compare.source, compare.ops, compare.op_offsets) == ("a >= 5", (">=",), (2,))
    assert negation.source == "not b in [1, -2.5,]"
    membership = negation.operand
    assert isinstance(membership, n.In) and not membership.negated
    assert [item.value for item in membership.options.items] == [1, Decimal("-2.5")]
    assert (call.name, call.offset, call.length) == ("f", 34, 17)
    assert call.args[0].value == "x"
    assert call.kwargs[0].name == "within"
    assert call.kwargs[0].value.value == timedelta(days=7)


def test_chained_comparison_keeps_every_operand():
    tree = parse_condition("30 <= days_since(last_purchase_at) <= 60")
    assert isinstance(tree, n.Compare)
    assert tree.ops == ("<=", "<=")
    assert [o.source for o in tree.operands] == ["30", "days_since(last_purchase_at)", "60"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        ("12.50", Decimal("12.50")),
        ("-3", -3),
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        (r"'back\\slash'", "back\\slash"),
        ("true", True),
        ("false", False),
        ("15m", timedelta(minutes=15)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
    ],
)
def test_literals(text, value):
    tree = parse_condition(text)
    assert isinstance(tree, n.Literal)
    assert tree.value == value
    assert type(tree.value) is type(value)


def test_not_in_dotted_fields_now_and_multiline():
    tree = parse_condition('event.properties.sku not in ["a"]\n and\n now - 1h > x')
    first, second = tree.items
    assert first.negated and first.item.name == "event.properties.sku"
    assert isinstance(second.operands[0], n.Arith)
    assert second.operands[0].source == "now - 1h"
    assert second.offset == 40


def test_keywords_are_not_field_prefixes():
    tree = parse_condition("nowhere and notable or order_in")
    assert [item.name for item in tree.items[0].items] == ["nowhere", "notable"]
    assert tree.items[1].name == "order_in"


VALUE = "a value (a field, number, string, list or function call)"
OPERATOR = "an operator such as ==, <, in, and, or"


@pytest.mark.parametrize(
    ("text", "message", "offset", "length"),
    [
        ("", "the condition is empty", 0, 1),
        ("   ", "the condition is empty", 0, 1),
        (
            "total_spent = 5",
            "unexpected '=': write == to compare (a single = only names a function "
            'argument, as in within="7d")',
            12,
            1,
        ),
        ("total_spent ==", f"unexpected the end of the condition; expected {VALUE}", 14, 1),
        ("(total_spent > 1", "unexpected the end of the condition; expected ')'", 16, 1),
        ("total_spent 5", f"unexpected '5'; expected {OPERATOR}", 12, 1),
        ("a in [1 2]", f"unexpected '2'; expected {OPERATOR}", 8, 1),
        ("a and and b", f"unexpected 'and'; expected {VALUE}", 6, 3),
        (
            'count(within=7d, "visit")',
            "a positional argument cannot follow a named one (name=value)",
            17,
            7,
        ),
        ('member_tier == "gold', 'unterminated string: close it with "', 15, 1),
        ("a && b", "unexpected character '&': write 'and' instead of '&'", 2, 1),
        ("a || b", "unexpected character '|': write 'or' instead of '|'", 2, 1),
        (
            "!a",
            "unexpected character '!': write 'not' instead of '!' (and != for 'not equal')",
            0,
            1,
        ),
        ("a == 3 # comment", "unexpected character '#'", 7, 1),
        ("a.", "unexpected the end of the condition; expected a name", 2, 1),
        (
            "days_since(x) > 30days",
            "invalid duration '30days': use a number and a unit w, d, h, m or s "
            "(for example '14d', '12h', '30m', '2w' or '1d12h')",
            16,
            6,
        ),
        ("x > 0d", "invalid duration '0d': it must be longer than zero", 4, 2),
    ],
)
def test_syntax_errors(text, message, offset, length):
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert (caught.value.message, caught.value.offset, caught.value.length) == (
        message,
        offset,
        length,
    )


def test_length_limit():
    text = "a == 1 or " * 1000 + "a == 1"
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.message == (
        "the condition is 10,006 characters long; the limit is 10,000: split it into several "
        "conditions or a named segment"
    )
    assert caught.value.offset == 10_000


def test_depth_limit():
    parse_condition("not " * 19 + "a")
    text = "not " * 21 + "a"
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.message == (
        "the condition nests more than 20 levels deep: split it into named segments"
    )
    assert (caught.value.offset, caught.value.length) == (80, 5)


def test_parentheses_do_not_count_as_depth_but_flat_and_chains_do_not_either():
    parse_condition("(" * 100 + "a" + ")" * 100)
    parse_condition(" and ".join(f"a{i}" for i in range(1000)))


def test_list_size_limit():
    parse_condition("a in [" + ",".join("1" for _ in range(1000)) + "]")
    text = "a in [" + ",".join("1" for _ in range(1001)) + "]"
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.message == (
        "the list has 1,001 items; the limit is 1,000: use a tag (has_tag) or a segment for "
        "large groups"
    )
    assert caught.value.offset == 6 + 2 * 1000


def test_caret_points_at_the_error():
    text = "total_spent > 1 and\nmember_tier = 'gold'"
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.caret(text) == "member_tier = 'gold'\n            ^"
