"""The 90-day boundary through the CLI, with the wall clock frozen (freezegun)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from freezegun import freeze_time
from lifecycle_data import add_events, add_users
from typer.testing import CliRunner

from cli import app

BOUGHT = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)


def stage_shown(at: datetime) -> str:
    with freeze_time(at):
        result = CliRunner().invoke(app, ["users", "show", "u1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["stage"]


def test_users_show_stage_turns_lapsed_one_second_after_90_days(store, project_dir, monkeypatch):
    with store.begin() as connection:
        add_users(connection, BOUGHT, {"id": "u1"})
        add_events(connection, BOUGHT, ("u1", "purchase", BOUGHT, 99))
    monkeypatch.chdir(project_dir)
    assert stage_shown(BOUGHT + timedelta(days=90)) == "first_purchase"
    assert stage_shown(BOUGHT + timedelta(days=90, seconds=1)) == "lapsed_member"


def test_stats_without_at_uses_the_frozen_clock(store, project_dir, monkeypatch):
    with store.begin() as connection:
        add_users(connection, BOUGHT, {"id": "u1"})
        add_events(connection, BOUGHT, ("u1", "purchase", BOUGHT, 99))
    monkeypatch.chdir(project_dir)
    for offset, stage in (
        (timedelta(days=90), "first_purchase"),
        (timedelta(days=90, seconds=1), "lapsed_member"),
    ):
        with freeze_time(BOUGHT + offset):
            result = CliRunner().invoke(app, ["stats", "--json"])
        counts = {row["stage"]: row["users"] for row in json.loads(result.output)["stages"]}
        assert counts[stage] == 1
