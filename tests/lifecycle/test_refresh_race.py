"""The stage refresh never loses a stage change to an ingest that commits meanwhile.

On PostgreSQL (READ COMMITTED) an ingest can commit between the refresh reading who
is dirty and clearing the flags; the refresh used to clear *every* flag, so that
user's new data was never evaluated. SQLite serialises writers, so the interleaving
exists on PostgreSQL only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from engine.lifecycle import refresh_stages
from engine.store.people import StageMembership
from tests.planning.helpers import ingest

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def open_stage(store, user_id: str) -> str | None:
    m = StageMembership.__table__
    with store.connect() as connection:
        query = sa.select(m.c.stage).where(m.c.user_id == user_id, m.c.exited_at.is_(None))
        return connection.execute(query).scalar()


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_an_ingest_committing_during_a_refresh_is_evaluated_next(store, tmp_path):
    ingest(
        store,
        tmp_path,
        now=T0,
        users=[
            {"id": "busy"},
            {"id": "late", "member_since": (T0 - timedelta(days=2)).isoformat()},
        ],
        events=[{"user": "busy", "type": "visit", "at": (T0 - timedelta(hours=1)).isoformat()}],
    )
    with store.begin() as connection:
        refresh_stages(connection, store.settings, T0)
    assert open_stage(store, "late") == "registered"

    # `busy` visits again (dirty); while the refresh is under way, `late` buys.
    later = T0 + timedelta(hours=2)
    ingest(
        store,
        tmp_path,
        now=later,
        events=[{"user": "busy", "type": "visit", "at": later.isoformat()}],
    )
    purchase = {"user": "late", "type": "purchase", "at": later.isoformat(), "amount": 30}
    injected = []

    with store.begin() as connection:

        @event.listens_for(connection, "before_cursor_execute")
        def ingest_meanwhile(conn, cursor, statement, *_):
            if "SET stage_dirty" in statement and not injected:
                injected.append(statement)
                ingest(store, tmp_path, now=later, events=[purchase])  # commits on its own

        refresh_stages(connection, store.settings, later)

    assert injected, "the refresh never cleared its flags"
    with store.begin() as connection:
        refresh_stages(connection, store.settings, later + timedelta(minutes=1))
    assert open_stage(store, "late") == "first_purchase"
