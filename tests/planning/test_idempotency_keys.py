"""Idempotency keys are global (DESIGN invariant 9): never derived from row numbers.

A Message-ID or webhook-id that two installs, or a database restored from a backup,
could give to two different messages makes receivers drop real ones (seen: 832
identical webhook-ids from two projects).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.planning.runner import evaluate
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.migrations import upgrade
from engine.store.people import Event
from engine.store.planning import Decision, OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
THANKS = "trigger: {event: purchase}\nactions:\n  tag: {add: [thanked]}\n"


def keys(store) -> list[tuple[int, str]]:
    o = OutboxAction.__table__
    with store.connect() as connection:
        return [
            tuple(r) for r in connection.execute(sa.select(o.c.decision_id, o.c.idempotency_key))
        ]


def purchase(store, tmp_path, source_id: str, at: datetime) -> None:
    ingest(
        store,
        tmp_path,
        now=at,
        events=[
            {"id": source_id, "user": "a", "type": "purchase", "at": at.isoformat(), "amount": 5}
        ],
    )


def test_two_installs_give_disjoint_keys(store, settings, tmp_path):
    other_path = tmp_path / "other.db"
    engine = create_engine_for(f"sqlite:///{other_path}")
    other = Store(engine=engine, settings=settings)
    upgrade(other)
    try:
        write_rule(settings, "thanks", THANKS)
        for shop in (store, other):
            folder = tmp_path / str(id(shop))
            folder.mkdir()
            ingest(shop, folder, now=T, users=[{"id": "a"}])
            purchase(shop, folder, "order-1", T - timedelta(minutes=5))
            evaluate(shop, ruleset_for(settings), at=T)
        ours, theirs = keys(store), keys(other)
    finally:
        engine.dispose()
    # The same rule, user, event and action, even the same row numbers: other keys.
    assert [d for d, _ in ours] == [d for d, _ in theirs] == [1]
    assert {k for _, k in ours}.isdisjoint(k for _, k in theirs)


def test_a_restored_database_never_reuses_a_sent_key(store, settings, tmp_path):
    write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=T, users=[{"id": "a"}])
    purchase(store, tmp_path, "order-1", T - timedelta(minutes=5))
    evaluate(store, ruleset_for(settings), at=T)
    [(first_decision, sent_key)] = keys(store)
    # The backup was taken before order-1: restoring it drops its rows and rewinds
    # the row numbers, as restoring a dump does.
    _restore_to_before(store, "order-1")

    purchase(store, tmp_path, "order-2", T + timedelta(minutes=5))
    evaluate(store, ruleset_for(settings), at=T + timedelta(minutes=10))

    [(decision, key)] = keys(store)
    assert decision == first_decision  # the same row number as the lost decision...
    assert key != sent_key  # ...but not the same key


def test_keys_do_not_change_when_planned_again(store, settings, tmp_path):
    """The same occurrence in the same database always keys the same action."""
    write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=T, users=[{"id": "a"}])
    purchase(store, tmp_path, "order-1", T - timedelta(minutes=5))
    evaluate(store, ruleset_for(settings), at=T, dry_run=True)
    evaluate(store, ruleset_for(settings), at=T)
    first = keys(store)
    evaluate(store, ruleset_for(settings), at=T + timedelta(minutes=1))
    assert keys(store) == first and len(first[0][1]) == 32


def _restore_to_before(store, source_id: str) -> None:
    events, decisions, outbox = Event.__table__, Decision.__table__, OutboxAction.__table__
    with store.begin() as connection:
        connection.execute(outbox.delete())
        connection.execute(decisions.delete())
        connection.execute(events.delete().where(events.c.source_id == source_id))
        if connection.dialect.name == "postgresql":
            for table in ("outbox", "decisions", "events"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
