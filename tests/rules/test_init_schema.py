"""`nudge init` writes rule.schema.json, so every rule's `$schema` line resolves."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import jsonschema

from engine.project import scaffold
from engine.rules.loader import rule_files
from engine.rules.schema import SCHEMA_FILE, schema_text
from engine.rules.yaml_source import parse_yaml

SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


def as_json(value: Any) -> Any:
    """YAML values as an editor's YAML 1.2 core schema sees them (dates are text)."""
    if isinstance(value, dict):
        return {str(key): as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def test_init_writes_the_schema_every_rule_points_at_and_it_validates_them(tmp_path):
    folder = tmp_path / "shop"
    created = scaffold(folder, name="Shop")
    schema_path = folder / SCHEMA_FILE
    assert schema_path in created
    assert schema_path.read_text(encoding="utf-8") == schema_text()
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)

    files = rule_files(folder / "rules")
    assert len(files) >= 5
    for path in files:
        text = path.read_text(encoding="utf-8")
        (target,) = SCHEMA_LINE.findall(text)
        assert (path.parent / target).resolve() == schema_path.resolve(), path.name
        jsonschema.validate(as_json(parse_yaml(text, str(path)).data), schema)


def test_init_without_examples_still_writes_the_schema_and_never_overwrites_one(tmp_path):
    (tmp_path / SCHEMA_FILE).write_text("{}\n", encoding="utf-8")
    created = scaffold(tmp_path, examples=False)
    assert tmp_path / SCHEMA_FILE not in created
    assert (tmp_path / SCHEMA_FILE).read_text(encoding="utf-8") == "{}\n"
    other = tmp_path / "other"
    assert other / SCHEMA_FILE in scaffold(other, examples=False)
