"""Eligibility holds within one run and across modes, through ingest -> run.

- `every`, `once` and caps hold within one run (two new visits in one tick);
- shadow -> active: the users the shadow run saw are planned when the rule goes live;
- a user held out of a rule of an exclusive group gets no lower rule of that group.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.planning.assignment import bucket, holdout_basis_points
from engine.planning.runner import evaluate
from engine.store.planning import Decision, OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def two_visits_each(store, tmp_path, users=("a", "b")):
    ingest(store, tmp_path, now=T, users=[{"id": u} for u in users])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": u, "type": "visit", "at": (T - minutes * timedelta(minutes=1)).isoformat()}
            for u in users
            for minutes in (20, 10)
        ],
    )


def outbox_count(store, rule_id: str) -> int:
    o = OutboxAction.__table__
    with store.connect() as connection:
        query = sa.select(sa.func.count()).where(o.c.rule_id == rule_id)
        return connection.execute(query).scalar_one()


@pytest.mark.parametrize(
    ("policy", "suppressed"),
    [
        ("every: 30d", {"recently_received": 2}),
        ("caps: {per_user: {max: 1, per: 30d}}", {"capped": 2}),
        ("once: per_user", {}),
    ],
    ids=["every", "caps", "once"],
)
def test_two_visits_in_one_tick_give_one_plan(store, settings, tmp_path, policy, suppressed):
    write_rule(
        settings,
        "visit-thanks",
        f"trigger: {{event: visit}}\n{policy}\nactions:\n  tag: {{add: [visited]}}\n",
    )
    two_visits_each(store, tmp_path)

    outcome = evaluate(store, ruleset_for(settings), at=T).outcomes[0]

    assert (outcome.planned, outcome.suppressed) == (2, suppressed)
    assert outbox_count(store, "visit-thanks") == 2
    # The next tick sees the same visits again and plans nothing more.
    again = evaluate(store, ruleset_for(settings), at=T + timedelta(minutes=1)).outcomes[0]
    assert again.planned == 0
    assert outbox_count(store, "visit-thanks") == 2


def test_the_oldest_occurrence_not_stopped_is_the_one_planned(store, settings, tmp_path):
    """`every` ranks only the occurrences its `unless` did not stop."""
    write_rule(
        settings,
        "cart-nudge",
        "trigger: {event: add_to_cart}\nevery: 30d\n"
        'unless: count("purchase", since="trigger") >= 1\n'
        "actions:\n  tag: {add: [nudged]}\n",
    )
    ingest(store, tmp_path, now=T, users=[{"id": "a"}])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": "a", "type": "add_to_cart", "at": (T - 3 * HOUR).isoformat()},
            {"user": "a", "type": "purchase", "at": (T - 2 * HOUR).isoformat(), "amount": 5},
            {"user": "a", "type": "add_to_cart", "at": (T - HOUR).isoformat()},
        ],
    )

    outcome = evaluate(store, ruleset_for(settings), at=T).outcomes[0]

    assert (outcome.planned, outcome.suppressed) == (1, {"unless": 1})


def _rule(status: str, trigger: str) -> str:
    return f"status: {status}\ntrigger: {trigger}\nactions:\n  tag: {{add: [seen]}}\n"


@pytest.mark.parametrize(
    "trigger", ["{stage: first_purchase}", "{event: purchase}"], ids=["stage", "event"]
)
def test_a_rule_promoted_from_shadow_plans_the_users_it_previewed(
    store, settings, tmp_path, trigger
):
    write_rule(settings, "first-buyers", _rule("shadow", trigger))
    ingest(store, tmp_path, now=T, users=[{"id": "a"}, {"id": "b"}])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": u, "type": "purchase", "at": (T - HOUR).isoformat(), "amount": 10}
            for u in ("a", "b")
        ],
    )
    shadow = evaluate(store, ruleset_for(settings), at=T).outcomes[0]
    assert (shadow.shadow, shadow.planned) == (2, 0)
    # A later shadow tick does not count them again.
    assert evaluate(store, ruleset_for(settings), at=T + HOUR).outcomes[0].matched == 0

    write_rule(settings, "first-buyers", _rule("active", trigger))
    live = evaluate(store, ruleset_for(settings), at=T + 2 * HOUR).outcomes[0]

    assert (live.planned, live.shadow) == (2, 0)
    assert outbox_count(store, "first-buyers") == 2
    d = Decision.__table__
    with store.connect() as connection:
        outcomes = connection.execute(sa.select(d.c.user_id, d.c.outcome)).all()
    assert sorted(outcomes) == [("a", "planned"), ("b", "planned")]


def test_a_held_out_user_gets_no_lower_rule_of_the_group(store, settings, tmp_path):
    """The control group of the top rule stays untreated by the rest of its group."""
    users = [f"u{i:02d}" for i in range(40)]
    threshold = holdout_basis_points(0.5)
    held = {u for u in users if bucket(u, "big-offer", "nudge", "holdout") < threshold}
    assert 0 < len(held) < len(users)
    for rule_id, priority, holdout in (("big-offer", 90, "50%"), ("small-offer", 10, "0%")):
        write_rule(
            settings,
            rule_id,
            "trigger: {stage: first_purchase}\n"
            f"exclusive_group: offers\npriority: {priority}\n"
            f"experiment: {{holdout: {holdout}}}\n"
            "actions:\n  tag: {add: [offered]}\n",
        )
    ingest(store, tmp_path, now=T, users=[{"id": u} for u in users])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[
            {"user": u, "type": "purchase", "at": (T - HOUR).isoformat(), "amount": 10}
            for u in users
        ],
    )

    outcomes = {o.rule_id: o for o in evaluate(store, ruleset_for(settings), at=T).outcomes}

    assert outcomes["big-offer"].held_out == len(held)
    assert outcomes["small-offer"].planned == 0
    assert outcomes["small-offer"].suppressed == {"exclusive_group": len(users)}


def test_a_higher_follow_up_of_the_group_is_decided_first(store, settings, tmp_path):
    """Priority 90 is a follow-up, priority 10 an event rule: the follow-up still wins."""
    write_rule(settings, "seen", "trigger: {event: visit}\nactions:\n  tag: {add: [seen]}\n")
    write_rule(
        settings,
        "big",
        "trigger: {after: seen, wait: 1s}\nexclusive_group: offers\npriority: 90\n"
        "actions:\n  tag: {add: [big]}\n",
    )
    write_rule(
        settings,
        "small",
        "trigger: {event: visit}\nexclusive_group: offers\npriority: 10\n"
        "actions:\n  tag: {add: [small]}\n",
    )
    two_visits_each(store, tmp_path, users=("a",))

    outcomes = {o.rule_id: o for o in evaluate(store, ruleset_for(settings), at=T).outcomes}

    assert outcomes["big"].planned == 2  # one follow-up per visit
    assert (outcomes["small"].planned, outcomes["small"].suppressed) == (0, {"exclusive_group": 2})


def test_a_shadow_rule_takes_nobody_from_a_live_one(store, settings, tmp_path):
    for rule_id, priority, status in (("trial", 90, "shadow"), ("live", 10, "active")):
        write_rule(
            settings,
            rule_id,
            f"status: {status}\ntrigger: {{event: visit}}\nexclusive_group: offers\n"
            f"priority: {priority}\nexperiment: {{holdout: 50%}}\n"
            "actions:\n  tag: {add: [offered]}\n",
        )
    two_visits_each(store, tmp_path, users=[f"u{i}" for i in range(10)])

    outcomes = {o.rule_id: o for o in evaluate(store, ruleset_for(settings), at=T).outcomes}

    assert "exclusive_group" not in outcomes["live"].suppressed
    assert outcomes["live"].planned + outcomes["live"].held_out == 20
