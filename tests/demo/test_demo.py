"""The demo shop: deterministic, ingested through ingest_files, every stage populated."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from cli import app
from engine.demo import build_demo, write_demo_files
from engine.lifecycle import STAGES

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_same_seed_and_now_write_identical_files(tmp_path):
    first = write_demo_files(tmp_path / "a", now=NOW, users=300, seed=7)
    second = write_demo_files(tmp_path / "b", now=NOW, users=300, seed=7)
    other = write_demo_files(tmp_path / "c", now=NOW, users=300, seed=8)
    assert (first.users, first.events) == (second.users, second.events)
    assert first.users_path.read_bytes() == second.users_path.read_bytes()
    assert first.events_path.read_bytes() == second.events_path.read_bytes()
    assert first.events_path.read_bytes() != other.events_path.read_bytes()


def test_demo_records_are_plausible(tmp_path):
    files = write_demo_files(tmp_path, now=NOW, users=400, seed=7)
    users = [json.loads(line) for line in files.users_path.read_text("utf-8").splitlines()]
    events = [json.loads(line) for line in files.events_path.read_text("utf-8").splitlines()]
    assert len(users) == 400 and len(events) == files.events
    assert {u["locale"] for u in users} == {"zh-CN", "en"}
    assert {u.get("member_tier") for u in users} >= {None, "bronze", "silver", "gold"}
    types = {e["type"] for e in events}
    assert types >= {"visit", "signup", "purchase", "refund", "coupon_redeemed", "email_open"}
    assert all(e["currency"] == "CNY" for e in events if "amount" in e)
    assert any("utm_source" in e for e in events)
    # Nothing happens after now.
    assert max(datetime.fromisoformat(e["at"]) for e in events) <= NOW
    assert len({e["event_id"] for e in events}) == len(events)


# Pinned: a change here means the demo shop changed (fine when intended: re-pin).
EXPECTED_1000 = (
    {
        "new_visitor": 144,
        "prospect": 365,
        "registered": 168,
        "first_purchase": 93,
        "repeat_buyer": 57,
        "vip": 4,
        "lapsed_member": 142,
        "churned": 27,
    },
    282,
    438,
    "160406.30",
)


def test_build_demo_populates_every_stage_identically_on_each_backend(store):
    result = build_demo(store, now=NOW, users=1000, seed=7)
    assert result.ingest.rejected_count == 0
    assert result.ingest.events_inserted == result.files.events
    stats = result.stats
    counts = {row["stage"]: row["users"] for row in stats["stages"]}
    assert set(counts) == set(STAGES)
    assert all(counts[stage] > 0 for stage in STAGES), counts
    assert result.stages.entered == {stage: n for stage, n in counts.items() if n}
    assert stats["users"] == 1000
    assert (counts, stats["buyers"], stats["orders"], str(stats["gmv"])) == EXPECTED_1000


def test_demo_command_refuses_a_store_with_users(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    build_demo(store, now=NOW, users=20, seed=7)
    result = CliRunner().invoke(app, ["demo", "--users", "20"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: the store already holds 20 users; run `nudge demo` in a fresh project "
        "(nudge init demo-shop && cd demo-shop)\n"
    )


def test_demo_command_prints_stages_and_kpis(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    result = CliRunner().invoke(app, ["demo", "--users", "200", "--seed", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("wrote 200 users and ")
    assert lines[0].endswith(f" events to {project_dir / 'demo-data'}")
    assert lines[1].startswith("ingested 200 users and ")
    assert lines[1].endswith(" events (0 rejected)")
    assert lines[2] == "recorded 200 stage entries"
    assert lines[4].startswith("Shop KPIs as of ")
    assert "users seen                 200" in lines
    assert [line.split()[0] for line in lines[-8:]] == [
        "new_visitor",
        "prospect",
        "registered",
        "first_purchase",
        "repeat_buyer",
        "vip",
        "lapsed_member",
        "churned",
    ]
    data = json.loads(CliRunner().invoke(app, ["users", "show", "u00001", "--json"]).output)
    assert data["user"]["id"] == "u00001"
    assert data["stage_history"][0]["stage"] == data["stage"]
