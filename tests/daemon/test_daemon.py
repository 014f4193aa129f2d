"""The daemon's tick: every rule at now, and the last good version of a broken file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freezegun import freeze_time
from typer.testing import CliRunner

from cli import app
from engine.daemon import RuleCache, tick
from tests.planning.helpers import WINBACK, ingest, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def lapsed(store, folder):
    ingest(
        store,
        folder,
        now=T,
        users=[
            {"id": "g1", "member_tier": "gold", "email": "g1@example.com", "email_opt_in": True}
        ],
        events=[
            {
                "user": "g1",
                "type": "purchase",
                "amount": 300,
                "at": (T - timedelta(days=95)).isoformat(),
            }
        ],
    )


def test_a_rule_broken_after_loading_keeps_running_its_last_good_version(store, settings, tmp_path):
    path = write_rule(settings, "winback", WINBACK)
    cache = RuleCache()
    first = tick(store, cache, T - timedelta(days=30))
    assert [o.rule_id for o in first.outcomes] == ["winback"]

    path.write_text(WINBACK.replace("total_spent >= 200", "total_spent >= "), encoding="utf-8")
    lapsed(store, tmp_path)
    second = tick(store, cache, T)

    assert any(
        d.severity == "error" and "winback.yaml" in d.location.path for d in second.diagnostics
    )
    outcome = second.outcomes[0]
    assert outcome.rule_id == "winback"
    assert outcome.planned + outcome.held_out == 1  # g1, by the last good version


def test_run_once_plans_and_delivers(store, settings, tmp_path, monkeypatch):
    write_rule(
        settings,
        "tag-lapsed",
        "trigger: {stage: lapsed_member}\nactions:\n  tag: {add: [lapsed]}\n",
    )
    lapsed(store, tmp_path)
    monkeypatch.chdir(settings.project_dir)

    with freeze_time(T):  # the daemon reads the clock: pin it
        result = CliRunner().invoke(app, ["run", "--once"])

    assert result.exit_code == 0, result.output
    assert "tick (once): planned 1; tag-lapsed planned 1" in result.output
    assert "dispatched 1: sent 1" in result.output


def test_a_same_size_edit_of_a_rule_is_reloaded(store, settings):
    """`active` and `paused` have the same length; the edit must still be seen."""
    import os

    path = write_rule(
        settings, "tagger", "status: active\ntrigger: {stage: vip}\nactions:\n  tag: {add: [x]}\n"
    )
    cache = RuleCache()
    assert cache.refresh(settings).rules["tagger"].spec.status == "active"
    before = path.stat()
    path.write_text(path.read_text().replace("active", "paused"), encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime

    assert cache.refresh(settings).rules["tagger"].spec.status == "paused"
