"""Steady ticks read only what changed since the previous one (`changed_since`).

The daemon passes its previous tick less a lag; a full sweep of the look-back window
(at start, then hourly) catches anything an unusually long import committed later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.planning.runner import evaluate
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_an_event_ingested_before_the_window_waits_for_the_full_sweep(store, settings, tmp_path):
    write_rule(settings, "thanks", "trigger: {event: purchase}\nactions:\n  tag: {add: [t]}\n")
    ingest(store, tmp_path, now=T - 30 * MINUTE, users=[{"id": "a"}, {"id": "b"}])
    old = (T - 30 * MINUTE).isoformat()
    ingest(
        store,
        tmp_path,
        now=T - 30 * MINUTE,
        events=[{"user": "a", "type": "purchase", "at": old, "amount": 5}],
    )
    ingest(
        store,
        tmp_path,
        now=T - MINUTE,
        events=[{"user": "b", "type": "purchase", "at": old, "amount": 5}],
    )
    ruleset = ruleset_for(settings)

    steady = evaluate(store, ruleset, at=T, changed_since=T - 5 * MINUTE).outcomes[0]
    sweep = evaluate(store, ruleset, at=T + MINUTE).outcomes[0]

    assert (steady.planned, [s["user"] for s in steady.samples]) == (1, ["b"])
    assert (sweep.planned, [s["user"] for s in sweep.samples]) == (1, ["a"])


def test_a_follow_up_of_a_late_loaded_occurrence_is_due_at_once(store, settings, tmp_path):
    """Due long ago (the cart is five hours old) but decided just now: not skipped."""
    write_rule(
        settings, "cart-seen", "trigger: {event: add_to_cart}\nactions:\n  tag: {add: [c]}\n"
    )
    write_rule(
        settings,
        "reminder",
        "trigger: {after: cart-seen, wait: 1h}\nactions:\n  tag: {add: [r]}\n",
    )
    ingest(store, tmp_path, now=T, users=[{"id": "a"}])
    ingest(
        store,
        tmp_path,
        now=T,
        events=[{"user": "a", "type": "add_to_cart", "at": (T - 5 * 60 * MINUTE).isoformat()}],
    )

    outcomes = {
        o.rule_id: o
        for o in evaluate(store, ruleset_for(settings), at=T, changed_since=T - MINUTE).outcomes
    }

    assert (outcomes["cart-seen"].planned, outcomes["reminder"].planned) == (1, 1)


def test_audience_members_leave_on_a_steady_tick(store, settings, tmp_path):
    """An audience rule is never skipped as idle: a member who bought leaves at once."""
    from engine.delivery.runner import run_dispatcher
    from engine.store.delivery import AudienceMember

    write_rule(
        settings,
        "retarget",
        "trigger: {stage: registered}\nactions:\n  audience: {name: signed-up}\n",
    )
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "a", "ads_opt_in": True, "member_since": (T - MINUTE).isoformat()}],
    )
    ruleset = ruleset_for(settings)
    assert evaluate(store, ruleset, at=T).outcomes[0].planned == 1
    run_dispatcher(store, once=True, at=T)
    ingest(
        store,
        tmp_path,
        now=T + MINUTE,
        events=[{"user": "a", "type": "purchase", "at": (T + MINUTE).isoformat(), "amount": 5}],
    )

    steady = evaluate(store, ruleset, at=T + 2 * MINUTE, changed_since=T + MINUTE / 2)

    assert steady.outcomes[0].audience_removed == 1
    members = AudienceMember.__table__
    with store.connect() as connection:
        reason = connection.execute(sa.select(members.c.removed_reason)).scalar()
    assert reason == "no_longer_qualifies"
