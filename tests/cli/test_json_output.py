"""Every command that prints data has --json: one JSON document, and its exit code."""

from __future__ import annotations

import json

import pytest
from cli_shop import run, shop_fixtures

shop, in_shop = shop_fixtures()

# command -> keys its JSON object must have (a list: the type of its items' keys).
SHAPES = {
    ("stats",): {"as_of", "users", "buyers", "orders", "gmv", "stages", "currency"},
    ("users", "show", "u00001"): {"user", "consent", "tags", "profile", "stage_history"},
    ("dry-run",): {"at", "dry_run", "stage_entries", "rules", "diagnostics"},
    ("fire", "welcome-gift-pack"): {"at", "dry_run", "rules"},
    ("explain", "u00001", "--rule", "welcome-gift-pack"): {"verdict"},
    ("status",): {"counts", "dead", "retrying", "daemons", "rules", "missed"},
    ("report",): {"since", "until", "rules"},
    ("check", "--no-store"): {"diagnostics", "schedules"},
    ("test",): {"passed", "failed"},
    ("landing", "build", "--out", "site"): {"index", "pages"},
    ("coupons", "redeem"): {"counts", "refused"},
    ("retry", "--all"): {"requeued"},
    ("dispatch", "--once"): {"claimed", "outcomes", "reasons"},
}


@pytest.mark.parametrize("command", list(SHAPES), ids=" ".join)
def test_json_shape_and_exit_code(in_shop, command):
    result = run(*command, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert SHAPES[command] <= set(data), sorted(data)


def test_audiences_export_json_is_a_list_per_platform(in_shop):
    result = run("audiences", "export", "vip-retargeting", "--format", "csv", "--json")
    if result.exit_code == 1:  # the demo's 60 shoppers may leave the audience empty
        assert "has members yet" in result.stderr
        return
    [platform] = json.loads(result.stdout)
    assert {"platform", "added", "removed", "files"} <= set(platform)


def test_run_once_json_is_one_object_per_line_ending_with_the_summary(in_shop):
    result = run("run", "--once", "--no-dispatch", "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events][-1] == "summary"
    assert {"planned", "held_out", "delivered"} <= set(events[-1])


def test_ingest_json_and_exit_code_2_on_rejects(in_shop):
    (in_shop / "bad.csv").write_text("user,type,at,amount\nu1,purchase,not-a-time,10\n")
    result = run("ingest", "bad.csv", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["rejected_count"] == 1


def test_a_missing_user_exits_1_with_one_line(in_shop):
    result = run("users", "show", "nobody", "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no user 'nobody'")
    assert len(result.stderr.splitlines()) == 1
