"""docs/rules.md examples load; rule.schema.json is current and agrees with the loader."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from cli import app
from engine.rules import load_rules
from engine.rules.schema import SCHEMA_FILE, rule_json_schema, schema_text
from engine.rules.yaml_source import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "rules.md"
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)
HEADER = re.compile(r"^# rules/([a-z0-9_-]+\.yaml)\n")


def doc_examples() -> dict[str, str]:
    examples = {}
    for block in BLOCK.findall(DOCS.read_text(encoding="utf-8")):
        header = HEADER.match(block)
        assert header, f"a yaml example in docs/rules.md lacks '# rules/NAME.yaml':\n{block}"
        assert header.group(1) not in examples, f"two examples named {header.group(1)}"
        examples[header.group(1)] = block
    return examples


def as_json(value: Any) -> Any:
    """YAML values as an editor's YAML 1.2 core schema sees them (dates are text)."""
    if isinstance(value, dict):
        return {str(key): as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def test_every_docs_example_loads_cleanly(tmp_path):
    examples = doc_examples()
    for name, text in examples.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = load_rules(tmp_path)
    assert [d.render() for d in result.diagnostics] == []
    rule_names = {name.removesuffix(".yaml") for name in examples} - {"segments"}
    assert set(result.rules) == rule_names
    assert len(rule_names) >= 20
    assert set(result.segments) == {"high-value", "gold-members"}


def test_docs_document_every_key_of_the_schema():
    headings = re.findall(r"^### (.*)$", DOCS.read_text(encoding="utf-8"), re.MULTILINE)
    words = {word for heading in headings for word in heading.split()}
    assert set(rule_json_schema()["properties"]) <= words


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return rule_json_schema()


@pytest.mark.parametrize("name", sorted(set(doc_examples()) - {"segments.yaml"}))
def test_docs_examples_satisfy_the_json_schema(name, schema):
    data = parse_yaml(doc_examples()[name], name).data
    jsonschema.validate(as_json(data), schema)


def test_shipped_rules_satisfy_the_json_schema():
    schema = rule_json_schema()
    shipped = sorted((ROOT / "rules").glob("*.yaml"))
    for path in shipped:
        if path.name == "segments.yaml":
            continue
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line == "# yaml-language-server: $schema=../rule.schema.json", path.name
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path)).data
        jsonschema.validate(as_json(data), schema)


def test_schema_rejects_what_the_loader_rejects():
    schema = rule_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    good = {"trigger": {"stage": "vip"}, "actions": {"tag": {"add": ["a"]}}}
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {**good, "tigger": {}},
        {**good, "trigger": {"stage": "lapsed"}},
        {**good, "trigger": {"stage": "vip", "event": "purchase"}},
        {**good, "actions": {"cupon": {"value": 1}}},
        {**good, "actions": {}},
        {**good, "every": "30 days"},
        {**good, "experiment": {"variants": {"a": {"weight": 1, "cupon": {}}}}},
        {"actions": good["actions"]},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_schema_file_is_up_to_date():
    shipped = (ROOT / SCHEMA_FILE).read_text(encoding="utf-8")
    assert shipped == schema_text(), "run: nudge schema --out rule.schema.json"


def test_schema_lists_stages_and_action_kinds():
    schema = rule_json_schema()
    assert "lapsed_member" in schema["$defs"]["Trigger"]["properties"]["stage"]["enum"]
    assert set(schema["properties"]["actions"]["properties"]) == {
        "audience", "coupon", "email", "sms", "tag", "webhook",
    }  # fmt: skip
    jsonschema.Draft202012Validator.check_schema(schema)


def test_nudge_schema_prints_and_writes(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0
    assert json.loads(printed.output) == json.loads(schema_text())
    out = tmp_path / "rule.schema.json"
    written = runner.invoke(app, ["schema", "--out", str(out)])
    assert (written.exit_code, written.output) == (0, f"wrote {out}\n")
    assert out.read_text(encoding="utf-8") == schema_text()
