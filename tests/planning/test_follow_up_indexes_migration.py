"""Revision 0007 on a populated 0006 store: every decision gets its occurrence instant
(the decision instant where it had none, what follow-ups waited from), and the
follow-ups' indexes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command

from engine.config import Settings
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.migrations import alembic_config, current_revision, upgrade

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
NEW_INDEXES = {
    "ix_decisions_rule_occurred": ["rule_id", "outcome", "occurred_at"],
    "ix_decisions_rule_decided": ["rule_id", "decided_at"],
}


def _populate_0006(connection) -> None:
    """Two decisions of one run: one from before 0002 (no occurrence instant), one with."""
    at = T.replace(tzinfo=None) if connection.dialect.name == "sqlite" else T
    connection.execute(
        sa.text(
            "INSERT INTO runs (id, rule_id, rule_hash, slot, at, mode, status, counts, "
            "started_at) VALUES (1, 'welcome', 'h', 's', :at, 'run', 'done', '{}', :at)"
        ),
        {"at": at},
    )
    for user, occurred in (("old", None), ("new", at - timedelta(hours=5))):
        connection.execute(
            sa.text(
                "INSERT INTO decisions (run_id, rule_id, user_id, occurrence_key, outcome, "
                "decided_at, occurred_at) VALUES (1, 'welcome', :user, :key, 'planned', :at, "
                ":occurred)"
            ),
            {"user": user, "key": f"event:{user}", "at": at, "occurred": occurred},
        )


def _indexes(engine) -> dict[str, list[str]]:
    return {
        index["name"]: index["column_names"]
        for index in sa.inspect(engine).get_indexes("decisions")
        if index["name"] in NEW_INDEXES
    }


def _instants(connection) -> dict[str, tuple]:
    rows = connection.exec_driver_sql("SELECT user_id, occurred_at, decided_at FROM decisions")
    return {user: (occurred, decided) for user, occurred, decided in rows}


def test_0007_gives_every_decision_its_occurrence_instant_and_indexes(empty_url):
    engine = create_engine_for(empty_url)
    store = Store(engine=engine, settings=Settings())
    try:
        upgrade(store, "0006")
        with engine.begin() as connection:
            _populate_0006(connection)
            before = _instants(connection)
        assert before["old"][0] is None
        assert _indexes(engine) == {}

        upgrade(store, "0007")

        assert current_revision(store) == "0007"
        assert _indexes(engine) == NEW_INDEXES
        with engine.begin() as connection:
            after = _instants(connection)
        # The old decision is anchored where follow-ups anchored it (its decision), the
        # newer one keeps its own occurrence instant.
        assert after == {"old": (before["old"][1], before["old"][1]), "new": before["new"]}

        command.downgrade(alembic_config(store), "0006")
        assert _indexes(engine) == {}
    finally:
        engine.dispose()
