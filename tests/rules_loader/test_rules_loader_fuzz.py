"""Fuzzing the loader: whatever the text, it returns a Rule or located diagnostics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from engine.errors import LocatedError
from engine.rules import load_rule_file, load_rules

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

FRAGMENTS = [
    "trigger:", "  stage: vip", "  event: purchase", "  where: event.amount > 1",
    "  schedule: '0 10 * * MON'", "  after: x", "  wait: 3d", "actions:",
    "  coupon: {value: 20}", "  tag: {add: [a]}", "  email:", "    creative: w", "when:",
    "  - total_spent > 1", "unless: no", "once: per_user", "every: 30d", "experiment:",
    "  holdout: 10%", "  variants:", "    a: {weight: 1, coupon: {value: 3}}", "id: r",
    "flight: {start: 2026-11-01, end: 2026-10-01}", "caps: {per_user: {max: 0}}", "- a",
    "<<: *x", "a: &x {b: 1}", "? [a]", "!!binary aGk=", "'", '"\\x"', "|", ">-", "\t",
    "%YAML 1.1", "---", "...", "key: [", "{", "]", ": :", "&a [*a]", "2026-02-30",
]  # fmt: skip

yaml_like_text = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("\n".join),
    st.text(
        alphabet=st.sampled_from(list(" \n\t:-[]{}\"'|>#&*!%@,?ab01.\\\x00\x85\u2028é")),
        max_size=80,
    ),
    st.text(max_size=60),
)

KEYS = st.sampled_from(
    ["id", "trigger", "stage", "event", "where", "schedule", "after", "wait", "when", "unless",
     "once", "every", "flight", "start", "end", "priority", "exclusive_group", "send_window",
     "between", "caps", "per_user", "max", "per", "experiment", "holdout", "variants",
     "weight", "actions", "coupon", "value", "email", "creative", "tag", "add", "zzz"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=False),
    st.sampled_from(["vip", "30d", "10%", "0 10 * * MON", "x", "09:00", "2026-11-01", ""]),
    st.text(max_size=10),
)  # fmt: skip
documents = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def load_text(folder: Path, text: str) -> None:
    """load_rules (through which every loader path runs) must classify the file."""
    path = folder / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    line_count = len(text.splitlines()) + 1
    result = load_rules(folder)
    if "fuzzed" in result.rules:
        assert result.diagnostics == []
        rule = result.rules["fuzzed"]
        for condition in rule.when:
            condition.offset_location(len(condition.text))
        return
    assert result.broken["fuzzed"] == result.diagnostics != []
    for diagnostic in result.diagnostics:
        assert diagnostic.location.path == str(path)
        assert diagnostic.message
        if diagnostic.location.line is not None:
            assert 1 <= diagnostic.location.line <= line_count + 1
        diagnostic.render()


def test_load_rule_file_raises_located_error(folder):
    path = folder / "broken.yaml"
    path.write_text("trigger: [\n", encoding="utf-8")
    with pytest.raises(LocatedError) as caught:
        load_rule_file(path)
    assert [d.message for d in caught.value.diagnostics] == [
        "invalid YAML: expected the node content, but found '<stream end>'"
    ]
    path.unlink()


@FUZZ
@given(text=yaml_like_text)
def test_yaml_like_text_never_crashes(folder, text):
    if any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    load_text(folder, text)


@FUZZ
@given(document=documents, block=st.booleans())
def test_random_documents_never_crash(folder, document, block):
    if block:
        stream = io.StringIO()
        YAML().dump(document, stream)
        text = stream.getvalue()
    else:
        text = json.dumps(document)
    load_text(folder, text)


@FUZZ
@given(document=st.dictionaries(KEYS, documents, max_size=6))
def test_random_rules_on_a_valid_base_never_crash(folder, document):
    base = {"trigger": {"stage": "vip"}, "actions": {"tag": {"add": ["a"]}}}
    stream = io.StringIO()
    YAML().dump(base | document, stream)
    load_text(folder, stream.getvalue())
