"""A retargeting audience loses the members who stop qualifying for its rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.delivery.runner import run_dispatcher
from engine.planning.runner import evaluate
from engine.store.delivery import AudienceMember
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
VIP_AUDIENCE = """\
trigger: {stage: vip}
actions:
  audience: {name: vip-retargeting}
"""


def membership(store) -> dict[str, str | None]:
    members = AudienceMember.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(members.c.user_id, members.c.removed_reason))
        return dict(rows.all())


def test_members_who_leave_the_stage_leave_the_audience(store, settings, tmp_path):
    write_rule(settings, "vip-audience", VIP_AUDIENCE)
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "a", "ads_opt_in": True}, {"id": "b", "ads_opt_in": True}],
        events=[
            {
                "user": "a",
                "type": "purchase",
                "at": (T - timedelta(days=80)).isoformat(),
                "amount": 6000,
            },
            {
                "user": "b",
                "type": "purchase",
                "at": (T - timedelta(days=5)).isoformat(),
                "amount": 6000,
            },
        ],
    )
    ruleset = ruleset_for(settings)
    evaluate(store, ruleset, at=T)
    run_dispatcher(store, once=True, at=T)
    assert membership(store) == {"a": None, "b": None}

    # Eleven days later a's last purchase is 91 days old: lapsed, no longer a VIP.
    later = T + timedelta(days=11)
    outcome = evaluate(store, ruleset, at=later).outcomes[0]

    assert outcome.audience_removed == 1
    assert membership(store) == {"a": "no_longer_qualifies", "b": None}


def test_a_rule_reading_since_trigger_keeps_its_members(store, settings, tmp_path):
    """Membership does not remember the occurrence: the evaluation must not fail."""
    write_rule(
        settings,
        "recent-buyers",
        "trigger: {stage: first_purchase}\n"
        'when: count("visit", since="trigger") == 0\n'
        "actions:\n  audience: {name: recent-buyers}\n",
    )
    ingest(store, tmp_path, now=T, users=[{"id": "a", "ads_opt_in": True}])
    bought = (T - timedelta(days=1)).isoformat()
    ingest(
        store,
        tmp_path,
        now=T,
        events=[{"user": "a", "type": "purchase", "at": bought, "amount": 10}],
    )
    ruleset = ruleset_for(settings)
    outcome = evaluate(store, ruleset, at=T).outcomes[0]
    run_dispatcher(store, once=True, at=T)

    later = evaluate(store, ruleset, at=T + timedelta(hours=1)).outcomes[0]

    assert (outcome.status, outcome.planned, later.status) == ("done", 1, "done")
    assert membership(store) == {"a": None}
