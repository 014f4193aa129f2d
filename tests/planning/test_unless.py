"""`unless` lists exit conditions: any one of them stops the user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.planning.runner import evaluate
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_any_exit_condition_suppresses(store, settings, tmp_path):
    write_rule(
        settings,
        "nudge-buyers",
        "trigger: {stage: first_purchase}\n"
        'unless:\n  - has_tag("vip-handled")\n  - total_spent >= 500\n'
        "actions:\n  tag: {add: [nudged]}\n",
    )
    bought = (T - timedelta(days=2)).isoformat()
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "tagged", "tags": ["vip-handled"]}, {"id": "big"}, {"id": "plain"}],
        events=[
            {"user": "tagged", "type": "purchase", "at": bought, "amount": 50},
            {"user": "big", "type": "purchase", "at": bought, "amount": 800},
            {"user": "plain", "type": "purchase", "at": bought, "amount": 50},
        ],
    )

    outcome = evaluate(store, ruleset_for(settings), at=T, dry_run=True).outcomes[0]

    assert outcome.planned == 1 and outcome.suppressed == {"unless": 2}
    assert [(s["user"], s["outcome"]) for s in outcome.samples] == [
        ("plain", "planned"),
        ("big", "suppressed"),
        ("tagged", "suppressed"),
    ]
