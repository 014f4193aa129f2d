"""`nudge explain` for an occurrence already decided says what was decided and what
became of its actions, instead of re-evaluating it to "not matched"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from cli import app
from engine.checking.explain import explain_user
from engine.delivery.runner import run_dispatcher
from engine.planning.compile import load_ruleset
from engine.planning.runner import evaluate
from tests.planning.helpers import ingest, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
THANKS = """\
trigger: {event: purchase}
unless: count("refund", since="trigger") >= 1
actions:
  tag: {add: [thanked]}
"""


@pytest.fixture
def shop(store, settings, tmp_path, monkeypatch):
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=T, users=[{"id": "buyer"}, {"id": "refunder"}])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": "buyer", "type": "purchase", "at": (T - HOUR).isoformat(), "amount": 10},
            {"user": "refunder", "type": "purchase", "at": (T - HOUR).isoformat(), "amount": 10},
            {"user": "refunder", "type": "refund", "at": (T - HOUR / 2).isoformat(), "amount": 10},
        ],
    )
    evaluate(store, load_ruleset(settings), at=T)
    run_dispatcher(store, once=True, at=T)
    return store


def test_a_planned_and_sent_occurrence_is_reported_as_decided(shop, settings):
    later = T + timedelta(minutes=10)
    verdict = explain_user(shop, load_ruleset(settings), "buyer", "thanks", at=later)["verdict"]

    assert verdict["outcome"] == "decided"
    assert verdict["decided"]["outcome"] == "planned"
    assert verdict["decided"]["at"] == T.isoformat()
    assert [(a["kind"], a["state"], a["sent_at"]) for a in verdict["actions"]] == [
        ("tag", "sent", T.isoformat())
    ]
    output = (
        CliRunner()
        .invoke(app, ["explain", "buyer", "--rule", "thanks", "--at", later.isoformat()])
        .output
    )
    assert f"verdict: decided at {T.isoformat()}: planned; tag sent at {T.isoformat()}" in output


def test_a_stopped_occurrence_is_reported_with_its_reason(shop, settings):
    later = T + timedelta(minutes=10)
    verdict = explain_user(shop, load_ruleset(settings), "refunder", "thanks", at=later)["verdict"]

    assert verdict["outcome"] == "decided"
    assert (verdict["decided"]["outcome"], verdict["decided"]["reason"]) == ("suppressed", "unless")
    assert verdict["actions"] == []


def test_explain_reads_since_trigger_from_the_users_occurrence(shop, settings):
    data = explain_user(shop, load_ruleset(settings), "refunder", "thanks", at=T)
    unless = [c for c in data["clauses"] if c["part"] == "unless.0" and c["role"] == "clause"]
    assert [c["value"] for c in unless] == ["true"]
