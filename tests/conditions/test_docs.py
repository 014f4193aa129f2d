"""Every example of docs/conditions.md is a valid condition (docs are tested)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.conditions import Catalog, ConditionError, check_condition, check_segments

DOC = Path(__file__).resolve().parents[2] / "docs" / "conditions.md"
TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = [
    line.strip()
    for block in re.findall(r"```condition\n(.*?)```", TEXT, flags=re.S)
    for line in block.splitlines()
    if line.strip()
]
SEGMENTS = check_segments(
    {
        "high_value": "total_spent >= 1000 or purchase_count >= 5",
        "reachable_high_value": 'in_segment("high_value") and email_opt_in',
    }
)


def test_the_reference_has_examples():
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize("text", EXAMPLES)
def test_example_checks(text):
    check_condition(text, catalog=Catalog.for_trigger("event", segments=SEGMENTS))


@pytest.mark.parametrize(
    "row", re.findall(r"^\| `(.+?)` \| (.+?) \|$", TEXT.split("## Errors")[1], flags=re.M)
)
def test_documented_errors_are_the_real_ones(row):
    text, message = row
    with pytest.raises(ConditionError) as caught:
        check_condition(text, catalog=Catalog.for_trigger("stage"))
    expected = message.removesuffix(" ...")
    assert caught.value.message.startswith(expected.rstrip(".").removesuffix(" ..."))
