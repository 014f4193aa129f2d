"""Rule test files: a test's own `now:`, and every problem located at file:line:col."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from engine.checking.ruletest_file import load_test_file
from engine.checking.ruletests import run_rule_tests
from engine.errors import LocatedError
from engine.planning.compile import load_ruleset

REPO = Path(__file__).resolve().parents[2]

# double-eleven fires at 20:00 on 10 and 11 November, within its flight (1-11 November).
PER_TEST_NOW = """\
now: 2026-11-11T20:00:00+08:00
tests:
  - name: the 11 November slot (the file's now)
    users: [{id: d1, email: d1@example.com, email_opt_in: true}]
    events: [{user: d1, type: purchase, at: -40d, amount: 320}]
    expect:
      - {rule: double-eleven, planned: [d1]}
  - name: the 10 November slot (this test's own now)
    now: 2026-11-10T20:00:00+08:00
    users: [{id: d1, email: d1@example.com, email_opt_in: true}]
    events: [{user: d1, type: purchase, at: -40d, amount: 320}]
    expect:
      - {rule: double-eleven, planned: [d1]}
  - name: a day after the flight ended nothing is sent
    now: 2026-11-12T20:00:00+08:00
    users: [{id: d1, email: d1@example.com, email_opt_in: true}]
    events: [{user: d1, type: purchase, at: -40d, amount: 320}]
    expect:
      - {rule: double-eleven, planned: []}
"""


def write(folder: Path, text: str, name: str = "t.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(LocatedError) as caught:
        load_test_file(path)
    return [d.render().replace(f"{path.parent}/", "") for d in caught.value.diagnostics]


def test_each_test_may_have_its_own_now(tmp_path):
    spec = load_test_file(write(tmp_path, PER_TEST_NOW))
    assert [spec.now_of(case).isoformat() for case in spec.tests] == [
        "2026-11-11T20:00:00+08:00",
        "2026-11-10T20:00:00+08:00",
        "2026-11-12T20:00:00+08:00",
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_test_runs_at_its_own_now(settings, tmp_path):
    shutil.copytree(REPO / "rules", settings.rules_dir, dirs_exist_ok=True)
    ruleset = load_ruleset(settings)
    run = run_rule_tests(settings, write(tmp_path, PER_TEST_NOW), ruleset)
    assert [(r.name, r.failures) for r in run.results] == [
        ("the 11 November slot (the file's now)", []),
        ("the 10 November slot (this test's own now)", []),
        ("a day after the flight ended nothing is sent", []),
    ]
    # The same test at the file's now would be a second plan of the 11th, not the 10th:
    # prove the per-test now is what moved it by breaking the expectation.
    broken = PER_TEST_NOW.replace(
        "now: 2026-11-12T20:00:00+08:00", "now: 2026-11-11T20:00:00+08:00"
    )
    run = run_rule_tests(settings, write(tmp_path, broken, "broken.yaml"), ruleset)
    assert run.results[2].failures == [
        "double-eleven: planned expected [], got ['d1'] (unexpected ['d1'])"
    ]


def test_a_bad_now_names_file_line_and_field(tmp_path):
    path = write(
        tmp_path,
        """\
        now: 2026-11-11T10:00:00+08:00
        tests:
          - name: a
            now: next tuesday
            expect: [{rule: r}]
          - name: b
            now: 2026-11-11
            expect: [{rule: r}]
          - name: c
            now: 2026-11-11T10:00:00
            expect: [{rule: r}]
        """,
    )
    assert errors(path) == [
        "t.yaml:4:10: error: 'now' must be a date and time with an offset such as "
        "2026-11-11T10:00:00+08:00, not 'next tuesday'\n"
        "        now: next tuesday\n"
        "             ^",
        "t.yaml:7:10: error: 'now' must be a date and time with an offset such as "
        "2026-11-11T10:00:00+08:00, not 2026-11-11\n"
        "        now: 2026-11-11\n"
        "             ^",
        "t.yaml:10:10: error: 'now' needs a time zone offset, e.g. 2026-11-11T10:00:00+08:00\n"
        "        now: 2026-11-11T10:00:00\n"
        "             ^",
    ]


def test_every_problem_of_a_test_file_is_located_at_once(tmp_path):
    path = write(
        tmp_path,
        """\
        nwo: 2026-11-11T10:00:00+08:00
        tests:
          - name: a
            users: [{id: u1}]
            events:
              - {user: u1, type: visit, at: -3x}
            ticks: [0, 2q]
            expect:
              - rule: r
                planed: [u1]
          - name: b
            users: nobody
            expect: []
        """,
    )
    lines = [error.split("\n")[0] for error in errors(path)]
    assert lines == [
        "t.yaml:1:1: error: unknown key 'nwo' (did you mean 'now'?)",
        "t.yaml:6:37: error: tests.0.events.0.at: invalid duration '3x': use a number and a "
        "unit w, d, h, m or s (for example '14d', '12h', '30m', '2w' or '1d12h')",
        "t.yaml:7:16: error: tick '2q': invalid duration '2q': use a number and a unit w, d, "
        "h, m or s (for example '14d', '12h', '30m', '2w' or '1d12h'); a tick is an offset "
        "from now like -3d, 0 or 2h",
        "t.yaml:10:9: error: unknown key 'planed' (did you mean 'planned'?)",
        "t.yaml:12:12: error: tests.1.users: input should be a valid list",
        "t.yaml:13:5: error: tests.1.expect: list should have at least 1 item after "
        "validation, not 0",
    ]


def test_a_test_without_any_now_is_located_at_its_name(tmp_path):
    path = write(
        tmp_path,
        """\
        tests:
          - name: has one
            now: 2026-11-11T10:00:00+08:00
            expect: [{rule: r}]
          - name: has none
            expect: [{rule: r}]
        """,
    )
    assert [error.split("\n")[0] for error in errors(path)] == [
        "t.yaml:5:5: error: test 'has none' has no 'now': give it one "
        "(now: 2026-11-11T10:00:00+08:00) or put one at the top of the file for every test"
    ]


def test_yaml_errors_and_wrong_shapes_are_located(tmp_path):
    assert errors(write(tmp_path, "now: [\n"))[0].startswith("t.yaml:2:1: error: invalid YAML")
    assert errors(write(tmp_path, "- a\n- b\n"))[0].startswith(
        "t.yaml:1:1: error: a rule test file is a mapping with 'now:' and 'tests:'"
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_broken_file_is_one_failed_result_with_located_messages(settings, tmp_path):
    ruleset = load_ruleset(settings)
    path = write(tmp_path, "now: 2026-11-11T10:00:00+08:00\ntests:\n  - name: x\n    expect: []\n")
    (result,) = run_rule_tests(settings, path, ruleset).results
    assert result.name == "(file)" and not result.passed
    assert result.failures[0].endswith(
        "t.yaml:4:5: error: tests.0.expect: list should have at least 1 item after validation, "
        "not 0\n"
        "        expect: []\n"
        "        ^"
    )
