"""`nudge fmt` in the engine: one stable layout that keeps comments, key order and meaning."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from engine.errors import LocatedError
from engine.rules.formatting import format_paths, format_text, yaml_files
from engine.rules.yaml_source import parse_yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "rules").glob("*.yaml")) + sorted(
    (REPO / "rules" / "tests").glob("*.yaml")
)
DOCS = REPO / "docs" / "rules.md"

MESSY = """\
# yaml-language-server: $schema=../rule.schema.json
description: Win back lapsed members.   # why this rule exists
trigger:
    stage: lapsed_member
when:
- member_tier in ["gold", "silver"]     # gold first (comments keep their column)
-   total_spent >= 200

# the exit condition
unless: 'days_since(last_purchase_at) < 90'
actions:
    email: {creative: winback}
    coupon:
        value: 20
        expires_in: 14d
"""

FORMATTED = """\
# yaml-language-server: $schema=../rule.schema.json
description: Win back lapsed members.   # why this rule exists
trigger:
  stage: lapsed_member
when:
  - member_tier in ["gold", "silver"]   # gold first (comments keep their column)
  - total_spent >= 200

# the exit condition
unless: 'days_since(last_purchase_at) < 90'
actions:
  email: {creative: winback}
  coupon:
    value: 20
    expires_in: 14d
"""


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(REPO)))
def test_every_shipped_rule_and_rule_test_is_already_formatted(path):
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text


def test_every_docs_example_is_formatted_and_formatting_is_idempotent():
    examples = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert len(examples) >= 20
    for example in [*examples, MESSY]:
        once = format_text(example)
        assert format_text(once) == once
        assert parse_yaml(once, "x").data == parse_yaml(example, "x").data
    assert all(format_text(example) == example for example in examples)


def test_indentation_is_made_consistent_and_comments_order_quotes_and_flow_stay():
    assert format_text(MESSY) == FORMATTED


def test_key_order_is_kept_as_written_not_sorted():
    text = "trigger: {stage: vip}\nactions:\n  tag: {add: [z]}\nid: zeta\ndescription: last\n"
    assert format_text(text) == text


def test_long_lines_are_never_wrapped():
    condition = " and ".join(f'has_tag("tag-number-{i}")' for i in range(20))
    text = f"trigger: {{stage: vip}}\nwhen: {condition}\nactions:\n  tag: {{add: [x]}}\n"
    assert format_text(text) == text


def test_a_comment_formatting_would_drop_is_reported_and_the_file_left_alone():
    text = "flight: {start: 2026-11-01,   # campaign start\n  end: 2026-11-11}\n"
    with pytest.raises(LocatedError) as caught:
        format_text(text, "r.yaml")
    (diagnostic,) = caught.value.diagnostics
    assert str(diagnostic.location) == "r.yaml:1:31"
    assert "would lose the comment '# campaign start'" in diagnostic.message


def test_invalid_yaml_is_located_and_empty_files_are_left_as_they_are():
    with pytest.raises(LocatedError) as caught:
        format_text("trigger:\n  stage: vip\n stray: 1\n", "bad.yaml")
    assert str(caught.value.diagnostics[0].location).startswith("bad.yaml:3:")
    assert format_text("# nothing here yet\n") == "# nothing here yet\n"
    assert format_text("") == ""


def test_check_reports_without_writing_and_format_writes_once(tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    (rules / "messy.yaml").write_text(MESSY, encoding="utf-8")
    (rules / "tests" / "messy-test.yaml").write_text(
        textwrap.dedent("""\
            now: 2026-11-11T10:00:00+08:00
            tests:
            - name: t   # a note
              expect:
              - {rule: messy, planned: []}
            """),
        encoding="utf-8",
    )
    (rules / "broken.yaml").write_text("trigger: [\n", encoding="utf-8")

    report = format_paths([rules], check=True)
    assert report.changed == [rules / "messy.yaml", rules / "tests" / "messy-test.yaml"]
    assert [str(d.location) for d in report.diagnostics] == [f"{rules / 'broken.yaml'}:2:1"]
    assert (rules / "messy.yaml").read_text(encoding="utf-8") == MESSY  # --check writes nothing

    report = format_paths([rules])
    assert len(report.changed) == 2 and not report.ok
    assert (rules / "messy.yaml").read_text(encoding="utf-8") == FORMATTED
    assert (rules / "tests" / "messy-test.yaml").read_text(encoding="utf-8") == (
        "now: 2026-11-11T10:00:00+08:00\n"
        "tests:\n"
        "  - name: t # a note\n"
        "    expect:\n"
        "      - {rule: messy, planned: []}\n"
    )
    assert (rules / "broken.yaml").read_text(encoding="utf-8") == "trigger: [\n"
    assert format_paths([rules], check=True).changed == []
    assert format_paths([rules], check=True).as_dict()["changed"] == []


def test_folders_expand_to_their_yaml_files_and_tests_files_are_taken_as_given(tmp_path):
    (tmp_path / "tests").mkdir()
    for name in ("b.yaml", "a.yml", ".hidden.yaml", "notes.txt", "tests/t.yaml"):
        (tmp_path / name).write_text("x: 1\n", encoding="utf-8")
    given = tmp_path / "notes.txt"
    assert yaml_files([tmp_path, given, tmp_path / "b.yaml"]) == [
        tmp_path / "a.yml",
        tmp_path / "b.yaml",
        tmp_path / "tests" / "t.yaml",
        given,
    ]
    missing = format_paths([tmp_path / "nope.yaml"])
    assert [d.message for d in missing.diagnostics] == ["no such file"]
