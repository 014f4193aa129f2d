"""`nudge fmt`, `nudge journeys` and `nudge init`'s schema, through the CLI.

These need the `fmt` and `journeys` commands in cli.py (engine: engine/rules/
formatting.py, engine/journeys/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from engine.rules.schema import SCHEMA_FILE

runner = CliRunner()

MESSY = "trigger:\n    stage: vip   # VIPs only\nactions:\n    tag: {add: [vip]}\n"
TIDY = "trigger:\n  stage: vip     # VIPs only\nactions:\n  tag: {add: [vip]}\n"


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"NO_COLOR": "1"})


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "shop"
    result = invoke("init", str(folder))
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(folder)
    return folder


def test_init_writes_the_rule_schema(tmp_path):
    folder = tmp_path / "new-shop"
    result = invoke("init", str(folder))
    assert result.exit_code == 0, result.output
    assert f"created {folder / SCHEMA_FILE}\n" in result.output
    assert (folder / SCHEMA_FILE).is_file()


def test_fmt_check_passes_on_the_shipped_rules_and_fails_listing_what_would_change(project):
    result = invoke("fmt", "--check")
    assert result.exit_code == 0, result.output

    messy = project / "rules" / "messy.yaml"
    messy.write_text(MESSY, encoding="utf-8")
    result = invoke("fmt", "--check")
    assert result.exit_code == 1
    assert str(Path("rules") / "messy.yaml") in result.output
    assert messy.read_text(encoding="utf-8") == MESSY

    result = invoke("fmt", "--check", "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is True and [Path(p).name for p in data["changed"]] == ["messy.yaml"]


def test_fmt_formats_the_given_files_keeping_comments(project):
    messy = project / "rules" / "messy.yaml"
    messy.write_text(MESSY, encoding="utf-8")
    result = invoke("fmt", str(messy))
    assert result.exit_code == 0, result.output
    assert messy.read_text(encoding="utf-8") == TIDY
    assert invoke("fmt", "--check", str(messy)).exit_code == 0


def test_fmt_reports_a_broken_file_with_its_location_and_exits_1(project):
    (project / "rules" / "broken.yaml").write_text("trigger: [\n", encoding="utf-8")
    result = invoke("fmt")
    assert result.exit_code == 1
    assert f"{Path('rules') / 'broken.yaml'}:2:1: error: invalid YAML" in result.output


def test_journeys_shows_the_shipped_chain(project):
    result = invoke("journeys")
    assert result.exit_code == 0, result.output
    assert "  first-purchase-thank-you [active] stage: first_purchase\n" in result.output
    assert "  └─ after 3d: cross-sell-after-first-purchase [active]\n" in result.output


def test_journeys_json_and_html(project):
    result = invoke("journeys", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["journeys"][0]["rule"] == "first-purchase-thank-you"
    assert data["journeys"][0]["follow_ups"][0]["rule"] == "cross-sell-after-first-purchase"
    assert data["exclusive_groups"] == {"winback": ["winback-lapsed-members"]}

    result = invoke("journeys", "--html", "journeys.html")
    assert result.exit_code == 0, result.output
    page = (project / "journeys.html").read_text(encoding="utf-8")
    assert (
        page.startswith("<!DOCTYPE html>") and 'id="rule-cross-sell-after-first-purchase"' in page
    )
