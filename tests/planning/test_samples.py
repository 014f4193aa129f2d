"""The samples a run reports (`nudge dry-run`, `nudge run` output): the first users by
id of each outcome, each with its actions in the order they were planned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.planning.outcome import SAMPLE_SIZE
from engine.planning.runner import evaluate
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
RULE = """\
trigger: {schedule: "* * * * *"}
actions:
  coupon: {value: 10, currency: CNY, expires_in: 7d}
  email: {creative: winback}
"""


def test_samples_list_each_outcomes_first_users_with_their_actions(store, settings, tmp_path):
    users = [
        {"id": f"u{n}", "email": f"u{n}@example.com", "email_opt_in": n % 2 == 0} for n in range(8)
    ]
    ingest(store, tmp_path, now=T - timedelta(days=1), users=users)
    write_rule(settings, "offer", RULE)

    outcome = evaluate(store, ruleset_for(settings), at=T).outcomes[0]

    planned = [
        {"user": user, "outcome": "planned", "reason": None, "variant": None}
        for user in ("u0", "u2", "u4")[:SAMPLE_SIZE]
    ]
    suppressed = [
        {"user": user, "outcome": "suppressed", "reason": "no_consent", "variant": None}
        for user in ("u1", "u3", "u5")[:SAMPLE_SIZE]
    ]
    expected = [s | {"actions": ["coupon", "email"]} for s in planned]
    expected += [s | {"actions": []} for s in suppressed]
    assert [
        s | {"actions": [action["kind"] for action in s["actions"]]} for s in outcome.samples
    ] == expected
    coupon, email = (action["params"] for action in outcome.samples[0]["actions"])
    assert (coupon["expires_in"], email) == ("7d", {"creative": "winback"})
