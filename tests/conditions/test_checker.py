"""Type-checking against the catalog: every mistake is an exact, located message."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.conditions import Catalog, ConditionError, Type, check_condition, check_segments
from engine.conditions import nodes as n
from engine.lifecycle import STAGES

SEGMENTS = check_segments({"big_spender": "total_spent >= 1000"})
STAGE_RULE = Catalog.for_trigger("stage", segments=SEGMENTS, rule_ids={"welcome-email"})
EVENT_RULE = Catalog.for_trigger("event", segments=SEGMENTS)
STAGE_LIST = ", ".join(STAGES)


@pytest.mark.parametrize(
    "text",
    [
        'member_tier in ["gold", "silver"] and total_spent >= 200',
        "30 <= days_since(last_purchase_at) <= 60",
        "hours_since(last_visit_at) < 2.5",
        "not is_set(phone) and email_opt_in",
        'count("visit", within="7d") >= 3 or count("visit", within=7d) == 0',
        'sum("refund.amount", within=30d) > 0',
        'received("welcome-email", within="14d")',
        'has_tag("wholesale") or in_segment("big_spender")',
        'stage == "lapsed_member" or stage in ["vip", "churned"]',
        "attributes.vip_score >= 3 and attributes.newsletter and attributes.city != 'Paris'",
        "1 < attributes.level < 5",
        "member_since < now - 2w and unsubscribed_at > now - 1d12h",
        "last_purchase_at > first_purchase_at",
        "(total_spent > 1) == true",
    ],
)
def test_valid_conditions_type_as_bool(text):
    assert check_condition(text, catalog=STAGE_RULE).type is Type.BOOL


def test_event_fields_in_event_rules():
    text = 'event.amount >= 100 and event.properties.sku in ["A1"] and event.type == "purchase"'
    assert check_condition(text, catalog=EVENT_RULE).type is Type.BOOL


def test_attribute_takes_the_type_of_what_it_is_compared_with():
    tree = check_condition(
        "1 < attributes.level and attributes.city in ['Paris']", catalog=STAGE_RULE
    )
    level = tree.items[0].operands[1]
    city = tree.items[1].item
    assert (level.type, city.type) == (Type.NUMBER, Type.STRING)


def test_call_arguments_are_bound_by_name():
    tree = check_condition('count("visit", "7d") > 1', catalog=STAGE_RULE)
    call = tree.operands[0]
    assert isinstance(call, n.Call)
    assert call.argument("event_type").value == "visit"
    assert call.argument("within").value == timedelta(days=7)


@pytest.mark.parametrize(
    ("text", "message", "offset", "length"),
    [
        (
            'total_spent >= "abc"',
            'cannot compare total_spent (a number) with "abc" (a string)',
            0,
            20,
        ),
        (
            'total_spent > "100"',
            'cannot compare total_spent (a number) with "100" (a string): '
            "remove the quotes around the number",
            0,
            19,
        ),
        (
            "last_purchase_at > 30",
            "cannot compare last_purchase_at (a timestamp) with 30 (a number): "
            "use days_since(...) to count days, as in days_since(last_purchase_at) > 30",
            0,
            21,
        ),
        (
            "days_since(total_spent) > 3",
            "days_since() takes a timestamp such as last_purchase_at, not total_spent (a number)",
            11,
            11,
        ),
        (
            "member_tier in [1, 2]",
            "cannot look for member_tier (a string) in a list holding 1 (a number)",
            16,
            1,
        ),
        (
            "event.amount > 3",
            "event.amount is only available in rules triggered by an event "
            "(this condition's trigger is 'stage')",
            0,
            12,
        ),
        (
            'event.properties.sku == "A1"',
            "event.properties.sku is only available in rules "
            "triggered by an event (this condition's trigger is 'stage')",
            0,
            20,
        ),
        (
            'stage == "lapsd_member"',
            "unknown stage 'lapsd_member' (did you mean "
            f"'lapsed_member'?); expected one of: {STAGE_LIST}",
            9,
            14,
        ),
        (
            'stage in ["vip", "churnd"]',
            f"unknown stage 'churnd' (did you mean 'churned'?); expected one of: {STAGE_LIST}",
            17,
            8,
        ),
        ("totl_spent > 3", "unknown field 'totl_spent' (did you mean 'total_spent'?)", 0, 10),
        (
            "day_since(last_visit_at) > 3",
            "unknown function 'day_since' (did you mean 'days_since'?)",
            0,
            9,
        ),
        (
            "days_since(last_purchase_at) == 3",
            "days_since() counts fractional time, so == is "
            "almost never true: use a range, as in 3 <= days_since(last_purchase_at) < 4",
            29,
            2,
        ),
        (
            "days_since(last_purchase_at) > purchase_count",
            "days_since() can only be compared "
            "with a number, as in days_since(last_purchase_at) > 30; purchase_count is not a "
            "number",
            31,
            14,
        ),
        (
            "days_since(last_purchase_at) in [1, 2]",
            "days_since() can only be compared with a "
            "number, as in days_since(last_purchase_at) > 30",
            0,
            28,
        ),
        (
            "total_spent",
            "total_spent is a number, not true/false: compare it, as in total_spent > 0",
            0,
            11,
        ),
        (
            "member_tier",
            'member_tier is a string, not true/false: compare it, as in member_tier == "..."',
            0,
            11,
        ),
        ('member_tier > "gold"', "text cannot be ordered with >: use ==, != or in [...]", 12, 1),
        ("email_opt_in < true", "true/false values cannot be ordered with <: use == or !=", 13, 1),
        (
            'count("visit", withn="7d") > 1',
            "count() has no argument 'withn' (did you mean "
            "'within'?); it takes count(event_type, within=..., since=...)",
            15,
            5,
        ),
        ('count("visit", within="7d", within=1d) > 1', "count() got 'within' twice", 28, 6),
        (
            'count("visit", within="7x") > 1',
            "invalid duration '7x': use a number and a unit "
            "w, d, h, m or s (for example '14d', '12h', '30m', '2w' or '1d12h')",
            22,
            4,
        ),
        (
            'count("visit", within=7) > 1',
            'count(): within must be a duration such as 7d or "7d", not 7',
            22,
            1,
        ),
        ("count(visit) > 1", "count(): event_type must be a quoted string, not visit", 6, 5),
        (
            "count() > 1",
            'count() needs its event_type argument, as in count("visit", within="7d") >= 3',
            0,
            7,
        ),
        (
            'count("a", 7d, "trigger", 3) > 1',
            "count() takes at most 3 arguments: count(event_type, within=..., since=...); got 4",
            26,
            1,
        ),
        (
            'sum("purchase.total") > 1',
            'sum() adds up event amounts: write "purchase.amount" '
            'or "refund.amount", not "purchase.total"',
            4,
            16,
        ),
        (
            'received("welcome-emial")',
            "unknown rule 'welcome-emial' (did you mean 'welcome-email'?)",
            9,
            15,
        ),
        (
            'in_segment("big_spendr")',
            "unknown segment 'big_spendr' (did you mean 'big_spender'?)",
            11,
            12,
        ),
        ('has_tag("")', "has_tag(): tag must not be empty", 8, 2),
        ("is_set(5)", "is_set() takes a field name, as in is_set(phone)", 7, 1),
        (
            "last_purchase_at + 30d < now",
            "only now can be shifted, as in now - 30d: "
            "last_purchase_at + 30d is not allowed; compare last_purchase_at with now - 30d, "
            "or use days_since(last_purchase_at)",
            0,
            22,
        ),
        (
            "member_since < now - 3",
            "now can only be shifted by a duration such as 30d, not by 3 (a number)",
            21,
            1,
        ),
        (
            "member_since < 30d",
            "cannot compare member_since (a timestamp) with 30d "
            "(a duration): compare a timestamp with now - 30d, or use days_since(...) > 30",
            0,
            18,
        ),
        ("-total_spent > 3", "only a number can be negated, as in -5", 0, 12),
        (
            "attributes.a == attributes.b",
            'compare attributes.a with a value, as in attributes.a == "gold"',
            0,
            12,
        ),
        (
            "attributes.a > now",
            "attributes.a can only be compared with a number, a string or "
            "true/false, not now (a timestamp)",
            15,
            3,
        ),
        ("attributes > 3", "attributes needs a key, as in attributes.vip_score", 0, 10),
        ("attributes.x in [now]", 'a list holds values such as "gold" or 3, not now', 17, 3),
        (
            'member_tier == ["a"]',
            'a list can only follow in or not in, as in member_tier in ["gold"]',
            15,
            5,
        ),
        ("phone == null", "there is no null value: use is_set(field) or not is_set(field)", 9, 4),
        ("True", "write true in lower case", 0, 4),
        (
            "days_since > 3",
            "days_since is a function: call it, as in days_since(last_purchase_at) > 60",
            0,
            10,
        ),
        (
            "total_spent() > 3",
            "total_spent is a field, not a function: remove the parentheses",
            0,
            11,
        ),
        (
            "event > 3",
            "event is only available in rules triggered by an event (this "
            "condition's trigger is 'stage')",
            0,
            5,
        ),
    ],
)
def test_type_errors(text, message, offset, length):
    with pytest.raises(ConditionError) as caught:
        check_condition(text, catalog=STAGE_RULE)
    assert (caught.value.message, caught.value.offset, caught.value.length) == (
        message,
        offset,
        length,
    )


def test_unknown_event_field_in_event_rule():
    with pytest.raises(ConditionError) as caught:
        check_condition("event.amout > 3", catalog=EVENT_RULE)
    assert caught.value.message == "unknown field 'event.amout' (did you mean 'event.amount'?)"


def test_unknown_segment_when_none_are_defined():
    with pytest.raises(ConditionError) as caught:
        check_condition('in_segment("vip")', catalog=Catalog.for_trigger("schedule"))
    assert caught.value.message == "unknown segment 'vip': rules/segments.yaml defines none"


def test_unknown_trigger_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown trigger kind 'cron'"):
        Catalog.for_trigger("cron")


def test_segments_may_use_each_other_in_any_order():
    checked = check_segments(
        {"loyal": 'in_segment("buyer") and purchase_count >= 3', "buyer": "purchase_count >= 1"}
    )
    assert set(checked) == {"loyal", "buyer"}
    assert all(tree.type is Type.BOOL for tree in checked.values())


def test_recursive_segments_are_an_error_at_the_closing_call():
    with pytest.raises(ConditionError) as caught:
        check_segments({"a": 'in_segment("b")', "b": 'total_spent > 1 and in_segment("a")'})
    error = caught.value
    assert error.message == "segment 'a' uses itself: a -> b -> a"
    assert (error.segment, error.offset, error.length) == ("b", 20, 15)


def test_segment_errors_name_the_segment():
    with pytest.raises(ConditionError) as caught:
        check_segments({"ok": "total_spent > 1", "bad": "event.amount > 1"})
    assert caught.value.segment == "bad"
    assert caught.value.message == (
        "event.amount is only available in rules triggered by an event "
        "(this condition's trigger is 'segment')"
    )
