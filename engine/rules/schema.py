"""The JSON Schema of a rule file, from the same models that validate it.

Editors (VS Code's YAML extension, JetBrains) read it through the first line of each
example rule, `# yaml-language-server: $schema=../rule.schema.json`, and then
autocomplete keys, list the stages and action kinds, and underline mistakes while ops
staff type. The repository ships it as rule.schema.json (`nudge schema --out ...`);
a test keeps that file equal to what this module generates.
"""

from __future__ import annotations

import json
from typing import Any

from engine.action_kinds import ACTION_KINDS
from engine.rules.fields import stage_names
from engine.rules.models import RuleFile

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "rule.schema.json"


def rule_json_schema() -> dict[str, Any]:
    """The schema of `rules/<id>.yaml`, with the registered action kinds and stages."""

    schema = RuleFile.model_json_schema()
    definitions: dict[str, Any] = schema.setdefault("$defs", {})
    trigger = definitions["Trigger"]["properties"]
    trigger["stage"] = {
        "description": trigger["stage"].get("description", ""),
        "enum": list(stage_names()),
    }
    action_schemas: dict[str, Any] = {}
    for name, kind in sorted(ACTION_KINDS.items()):
        params = kind.params.model_json_schema()
        for def_name, definition in params.pop("$defs", {}).items():
            definitions.setdefault(def_name, definition)
        params["description"] = kind.description
        if kind.example:
            params["examples"] = [kind.example]
        params.pop("title", None)
        action_schemas[name] = params
    schema["properties"]["actions"] = {
        "description": schema["properties"]["actions"].get("description", ""),
        "type": "object",
        "properties": action_schemas,
        "additionalProperties": False,
        "minProperties": 1,
    }
    definitions["Variant"] = _variant_schema(definitions["Variant"], action_schemas)
    return {"$schema": SCHEMA_DIALECT, **schema}


def _variant_schema(variant: dict[str, Any], actions: dict[str, Any]) -> dict[str, Any]:
    """In YAML, a variant's overrides sit beside `weight` under the action kind names;
    they are partial (deep-merged), so nothing in them is required."""
    properties: dict[str, Any] = {"weight": variant["properties"]["weight"]}
    for name, params in actions.items():
        properties[name] = {
            "description": f"Overrides deep-merged into actions.{name}.",
            "type": "object",
            "properties": params.get("properties", {}),
            "additionalProperties": False,
        }
    return {
        "description": variant.get("description", ""),
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "examples": [{"weight": 1, "coupon": {"value": 30}}],
    }


def schema_text() -> str:
    """The schema as the repository ships it (stable key order, trailing newline)."""
    return json.dumps(rule_json_schema(), indent=2, ensure_ascii=False) + "\n"
