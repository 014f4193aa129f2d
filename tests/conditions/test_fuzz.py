"""Fuzz: whatever the text, the parser and checker end with a tree or a ConditionError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.conditions import Catalog, ConditionError, check_condition, check_segments

CATALOG = Catalog.for_trigger(
    "event", segments=check_segments({"big": "total_spent > 100"}), rule_ids={"welcome"}
)

TOKENS = [
    "and",
    "or",
    "not",
    "in",
    "not in",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "+",
    "-",
    ".",
    "true",
    "false",
    "null",
    "now",
    "7d",
    "1d12h",
    "30days",
    "0d",
    "12",
    "3.5",
    "-4",
    '"gold"',
    "'x'",
    '"',
    "total_spent",
    "member_tier",
    "stage",
    '"vip"',
    '"lapsd_member"',
    "last_purchase_at",
    "attributes.vip",
    "attributes",
    "event.amount",
    "event.properties.sku",
    "event",
    "days_since",
    "hours_since",
    "is_set",
    "count",
    "sum",
    "received",
    "has_tag",
    "in_segment",
    '"purchase.amount"',
    '"big"',
    '"welcome"',
    "within",
    "within=",
    "phone",
    "email_opt_in",
    "unknown_thing",
    "&&",
    "#",
    "\n",
    "é",
    "\\",
]

token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join)
dense_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def _check(text: str) -> None:
    try:
        check_condition(text, catalog=CATALOG)
    except ConditionError as error:
        assert error.message
        assert 0 <= error.offset <= len(text)
        assert error.length >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text):
    _check(text)


@settings(max_examples=300, deadline=None)
@given(token_soup)
def test_token_soup(text):
    _check(text)


@settings(max_examples=300, deadline=None)
@given(dense_soup)
def test_dense_token_soup(text):
    _check(text)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.sampled_from(["(", "not ", "-", "[", "f("]))
def test_deep_nesting_is_refused_not_crashing(depth, opener):
    _check(opener * depth + "total_spent > 1")
