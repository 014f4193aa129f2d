"""check / test / dry-run / explain / fire through the CLI, with exact output."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from engine.checking.explain import explain_user
from engine.planning.compile import load_ruleset
from engine.planning.runner import evaluate
from tests.planning.helpers import WINBACK, ingest, write_rule

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture
def project(settings, monkeypatch):
    monkeypatch.chdir(settings.project_dir)
    return settings


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_check_reports_every_error_with_location(project):
    write_rule(project, "winback", WINBACK.replace("member_tier in", "member_teir in"))
    write_rule(project, "typo", "trigger: {stage: vip}\nactions:\n  emial: {creative: x}\n")
    write_rule(project, "fine", "trigger: {stage: vip}\nactions:\n  tag: {add: [vip]}\n")

    result = invoke("check", "--no-store")

    rules = Path("rules")  # shown relative to the working directory, like compilers do
    assert result.exit_code == 1
    assert (
        f"{rules / 'winback.yaml'}:3:5: error: unknown field 'member_teir' "
        "(did you mean 'member_tier'?)\n"
        '      - member_teir in ["gold", "silver"]\n'
        "        ^\n"
    ) in result.output
    assert (
        f"{rules / 'typo.yaml'}:3:3: error: unknown action kind 'emial' (did you mean 'email'?)"
    ) in result.output
    # The broken rule's creative is checked in the same pass: this project has none.
    assert (
        f"{rules / 'winback.yaml'}:12:21: error: rule winback: no creative 'winback' in "
    ) in result.output
    assert result.output.rstrip().endswith("1 rule valid, 3 errors, 0 warnings")


def test_check_json_and_schedule_fire_times(project):
    write_rule(
        project, "weekly", "trigger: {schedule: '0 10 * * MON'}\nactions:\n  tag: {add: [x]}\n"
    )
    result = invoke("check", "--no-store", "--json")
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    assert data["ok"] is True and data["rules"] == ["weekly"]
    fire_times = [datetime.fromisoformat(t) for t in data["schedules"]["weekly"]]
    assert len(fire_times) == 3
    assert all(t.astimezone(project.tz).strftime("%a %H:%M") == "Mon 10:00" for t in fire_times)
    assert fire_times[1] - fire_times[0] == timedelta(days=7)


# `nudge test` always runs on its own throw-away SQLite file: one backend is enough.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_shipped_rule_tests_pass_and_a_wrong_expectation_fails(project, tmp_path):
    shutil.copytree(REPO / "rules", project.rules_dir)
    result = invoke("test")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "8 passed, 0 failed"

    broken = project.rules_dir / "tests" / "vip-retargeting.yaml"
    broken.write_text(broken.read_text().replace("planned: [p1]", "planned: [p1, p3]"))
    result = invoke("test", str(broken))
    assert result.exit_code == 1
    assert (
        "vip-retargeting: planned expected ['p1', 'p3'], got ['p1'] (missing ['p3'])"
        in result.output
    )
    assert result.output.splitlines()[-1] == "0 passed, 1 failed"


def lapsed_members(store, folder):
    ingest(
        store,
        folder,
        now=T,
        users=[
            {
                "id": f"m{i}",
                "member_tier": "gold" if i % 2 else "silver",
                "email": f"m{i}@example.com",
                "email_opt_in": i % 4 != 0,
            }
            for i in range(24)
        ],
        events=[
            {
                "user": f"m{i}",
                "type": "purchase",
                "at": (T - timedelta(days=91 + i)).isoformat(),
                "amount": 150 + 5 * i,
            }
            for i in range(24)
        ],
    )


def test_explain_agrees_with_dry_run_for_every_user(store, project, tmp_path):
    write_rule(project, "winback", WINBACK)
    lapsed_members(store, tmp_path)
    ruleset = load_ruleset(project)
    outcome = evaluate(store, ruleset, at=T, dry_run=True).outcomes[0]
    assert outcome.planned and outcome.suppressed  # the sample covers both
    for i in range(24):
        user = f"m{i}"
        verdict = explain_user(store, ruleset, user, "winback", at=T)["verdict"]
        alone = evaluate(store, ruleset, at=T, user_id=user, dry_run=True).outcomes[0]
        expected = alone.samples[0]["outcome"] if alone.samples else "not_matched"
        assert verdict["outcome"] == expected, user


def test_dry_run_and_fire_through_the_cli(store, project, tmp_path):
    write_rule(project, "winback", WINBACK)
    lapsed_members(store, tmp_path)
    at = T.isoformat()

    dry = invoke("dry-run", "--at", at, "--rule", "winback")
    assert dry.exit_code == 0, dry.output
    shop_time = T.astimezone(project.tz).isoformat(sep=" ", timespec="seconds")
    assert dry.output.startswith(f"dry-run at {shop_time}\n")
    assert dry.output.splitlines()[-1].endswith("; nothing written")
    assert "winback: matched " in dry.output

    fired = invoke("fire", "winback", "--at", at)
    assert fired.exit_code == 0, fired.output
    matched_line = next(line for line in dry.output.splitlines() if line.startswith("winback:"))
    fired_line = next(line for line in fired.output.splitlines() if line.startswith("winback:"))
    assert matched_line.split("  (")[0] == fired_line.split("  (")[0]

    again = invoke("fire", "winback", "--at", at)
    assert "winback: this slot was already evaluated" in again.output

    missing = invoke("fire", "winbak")
    assert missing.exit_code == 1
    assert missing.output == "Error: no rule 'winbak' (did you mean 'winback'?)\n"


def test_explain_unknown_user(store, project, tmp_path):
    write_rule(project, "winback", WINBACK)
    lapsed_members(store, tmp_path)
    result = invoke("explain", "m999", "--rule", "winback")
    assert result.exit_code == 1
    assert result.output == "Error: no user 'm999' (did you mean 'm9'?)\n"


def test_explain_follows_the_stage_watermark_like_the_sweep(store, project, tmp_path):
    """An entry considered by an earlier run is not reconsidered: explain says so too."""
    write_rule(project, "winback", WINBACK)
    lapsed_members(store, tmp_path)
    ruleset = load_ruleset(project)
    evaluate(store, ruleset, at=T)
    # m0 (silver, 150 spent) did not match at T; a late-arriving purchase lifts it.
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {
                "user": "m0",
                "type": "purchase",
                "amount": 500,
                "at": (T - timedelta(days=100)).isoformat(),
            }
        ],
    )
    later = T + timedelta(hours=1)
    verdict = explain_user(store, ruleset, "m0", "winback", at=later)["verdict"]
    sweep = evaluate(store, ruleset, at=later).outcomes[0]
    assert verdict["outcome"] == "not_matched"
    assert sweep.planned == sweep.held_out == 0 and sweep.suppressed == {}
