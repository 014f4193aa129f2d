"""The rule's `unless` and flight are re-checked when an action is delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.delivery.runner import run_dispatcher
from engine.planning.runner import evaluate
from engine.store.planning import OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, inside send windows
FOLLOW_UP = """\
trigger: {stage: first_purchase}
unless: purchase_count >= 2
flight: {end: 2026-11-25}
actions:
  tag: {add: [thanked]}
"""


def outcomes(store) -> dict[str, tuple[str, str | None]]:
    outbox = OutboxAction.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(outbox.c.user_id, outbox.c.state, outbox.c.reason))
        return {user: (state, reason) for user, state, reason in rows}


def test_unless_and_flight_are_rechecked_at_send_time(store, settings, tmp_path):
    write_rule(settings, "thanks", FOLLOW_UP)
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "a"}, {"id": "b"}, {"id": "c"}],
        events=[
            {
                "user": u,
                "type": "purchase",
                "at": (T - timedelta(hours=1)).isoformat(),
                "amount": 10,
            }
            for u in ("a", "b", "c")
        ],
    )
    assert evaluate(store, ruleset_for(settings), at=T).outcomes[0].planned == 3
    # b buys again after planning: the exit condition now holds for b.
    ingest(
        store,
        tmp_path,
        now=T,
        events=[{"user": "b", "type": "purchase", "at": T.isoformat(), "amount": 10}],
    )

    run_dispatcher(store, once=True, at=T + timedelta(minutes=5))

    states = outcomes(store)
    assert states["a"] == ("sent", None)
    assert states["b"] == ("skipped", "unless")


def test_actions_due_after_the_flight_are_skipped(store, settings, tmp_path):
    write_rule(settings, "thanks", FOLLOW_UP)
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "a"}],
        events=[{"user": "a", "type": "purchase", "at": T.isoformat(), "amount": 10}],
    )
    evaluate(store, ruleset_for(settings), at=T)

    run_dispatcher(store, once=True, at=datetime(2026, 11, 26, 2, 0, tzinfo=UTC))

    assert outcomes(store) == {"a": ("skipped", "flight_over")}


def test_the_daemon_passes_its_rules(store, settings, tmp_path):
    """run_dispatcher(rules=...) checks `unless` against the rules it is given (the
    daemon's last good rules), not against the files as they are now."""
    path = write_rule(settings, "thanks", FOLLOW_UP)
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "a"}, {"id": "b"}],
        events=[
            {
                "user": u,
                "type": "purchase",
                "at": (T - timedelta(hours=1)).isoformat(),
                "amount": 10,
            }
            for u in ("a", "b")
        ],
    )
    kept = ruleset_for(settings)
    evaluate(store, kept, at=T)
    ingest(
        store,
        tmp_path,
        now=T,
        events=[{"user": "b", "type": "purchase", "at": T.isoformat(), "amount": 10}],
    )
    path.write_text("trigger: {stage: [broken\n", encoding="utf-8")  # a typo since

    run_dispatcher(store, once=True, at=T + timedelta(minutes=5), rules=lambda: kept)

    assert outcomes(store) == {"a": ("sent", None), "b": ("skipped", "unless")}
