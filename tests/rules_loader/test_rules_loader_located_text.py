"""LocatedText.offset_location: a character of a condition -> its file line and column."""

from __future__ import annotations

import pytest

from engine.errors import Location
from engine.rules.located_text import LocatedText
from engine.rules.yaml_source import parse_yaml

SOURCE = """\
when:
  - total_spent >= 200
  - "a \\"b\\" c"
  - 'it''s x'
  - |
    first line
      second
  - >
    folded one
    two

    three
  - plain one
    plain two
  - "dq
    next \\
    cont"
"""


def located(index: int) -> LocatedText:
    text = parse_yaml(SOURCE, "r.yaml").located_text(("when", index))
    assert text is not None
    return text


def where(index: int, offset: int) -> tuple[int, int]:
    location = located(index).offset_location(offset)
    return location.line, location.column


@pytest.mark.parametrize(
    ("index", "text"),
    [
        (0, "total_spent >= 200"),
        (1, 'a "b" c'),
        (2, "it's x"),
        (3, "first line\n  second\n"),
        (4, "folded one two\nthree\n"),
        (5, "plain one plain two"),
        (6, "dq next cont"),
    ],
)
def test_the_text_is_the_yaml_value(index, text):
    assert located(index).text == text


def test_every_visible_character_maps_to_itself_in_the_file():
    lines = SOURCE.split("\n")
    for index in range(7):
        text = located(index)
        for offset, char in enumerate(text.text):
            location = text.offset_location(offset)
            source = lines[location.line - 1]
            found = source[location.column - 1] if location.column <= len(source) else "\n"
            if char == "\n" or (char == " " and found == "\n"):
                assert found == "\n"  # a line break, or a line folded into a space
            elif char in "\"'" and found in "\\'":
                pass  # an escaped quote maps to its escape
            else:
                assert found == char, (index, offset)


def test_plain_scalar():
    assert where(0, 0) == (2, 5)
    assert where(0, 12) == (2, 17)  # the ">="
    assert where(0, 18) == (2, 23)  # the end, for "unexpected end" errors
    assert where(0, 99) == (2, 23)


def test_double_quoted_with_escapes():
    assert where(1, 0) == (3, 6)  # after the opening quote
    assert where(1, 2) == (3, 8)  # the escaped quote points at its backslash
    assert where(1, 3) == (3, 10)  # b
    assert where(1, 6) == (3, 14)  # c, behind two escapes


def test_single_quoted_with_doubled_quote():
    assert where(2, 0) == (4, 6)
    assert where(2, 2) == (4, 8)  # the ' of it's is the first of ''
    assert where(2, 3) == (4, 10)  # s
    assert where(2, 5) == (4, 12)  # x


def test_literal_block():
    assert where(3, 0) == (6, 5)
    assert where(3, 11) == (7, 5)  # the indented "  second" keeps its spaces
    assert where(3, 13) == (7, 7)  # s of second


def test_folded_block():
    assert where(4, 11) == (10, 5)  # "two" after a folded break
    assert where(4, 15) == (12, 5)  # "three" after a blank line


def test_multi_line_plain_and_double_quoted():
    assert where(5, 10) == (14, 5)  # "plain two" continues on the next line
    assert where(6, 3) == (16, 5)  # "next"
    assert where(6, 8) == (17, 5)  # "cont" after an escaped line break


def test_unlocated_text_counts_columns():
    text = LocatedText.unlocated("a > 1\nb")
    assert text.offset_location(2) == Location("<text>", 1, 3)
    assert text.offset_location(6) == Location("<text>", 2, 1)
    assert text.diagnostic("unknown field 'a'").render() == ("<text>:1:1: error: unknown field 'a'")
    assert LocatedText.unlocated("a > ").diagnostic("unexpected end", 4).render() == (
        "<text>:1:5: error: unexpected end\n    a >\n        ^"
    )


def test_diagnostic_points_into_the_file():
    text = located(0)
    assert text.diagnostic("unknown field 'total_spent'", 0).render() == (
        "r.yaml:2:5: error: unknown field 'total_spent'\n      - total_spent >= 200\n        ^"
    )
    assert text == "total_spent >= 200"
    assert str(text) == "total_spent >= 200"
