"""An incremental stage refresh records exactly what a full recomputation says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.lifecycle import refresh_stages, stages_as_of
from engine.store.people import StageMembership, User
from tests.planning.helpers import ingest

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def open_stages(connection) -> dict[str, str]:
    m = StageMembership.__table__
    rows = connection.execute(sa.select(m.c.user_id, m.c.stage).where(m.c.exited_at.is_(None)))
    return dict(rows.all())


def computed_stages(connection, settings, at) -> dict[str, str]:
    rows = connection.execute(stages_as_of(connection, settings, at)).all()
    return {user: stage for user, stage in rows if stage is not None}


def test_incremental_refresh_matches_full_computation(store, settings, tmp_path):
    day = timedelta(days=1)
    ingest(
        store,
        tmp_path,
        now=T0,
        users=[
            {"id": "buyer", "email_opt_in": True},
            {"id": "member", "member_since": (T0 - 82 * day).isoformat()},
            {"id": "future", "member_since": (T0 + 5 * day).isoformat()},
            {"id": "visitor"},
            {"id": "quiet"},
        ],
        events=[
            {"user": "buyer", "type": "purchase", "at": (T0 - 85 * day).isoformat(), "amount": 50},
            {"user": "visitor", "type": "visit", "at": (T0 - 25 * day).isoformat()},
            {"user": "quiet", "type": "purchase", "at": (T0 - 10 * day).isoformat(), "amount": 9},
        ],
    )
    with store.begin() as connection:
        refresh_stages(connection, store.settings, T0)
        assert open_stages(connection) == computed_stages(connection, store.settings, T0)

    # Ten days later: time alone moves buyer and member to lapsed, visitor to prospect,
    # and future becomes a member; a new purchase makes quiet a repeat buyer.
    later = T0 + 10 * day
    ingest(
        store,
        tmp_path,
        now=later,
        events=[
            {"user": "quiet", "type": "purchase", "at": (later - day).isoformat(), "amount": 20}
        ],
    )
    with store.begin() as connection:
        refresh_stages(connection, store.settings, later)
        stages = open_stages(connection)
        assert stages == computed_stages(connection, store.settings, later)
        assert stages == {
            "buyer": "lapsed_member",
            "member": "lapsed_member",
            "future": "registered",
            "visitor": "prospect",
            "quiet": "repeat_buyer",
        }
        users = User.__table__
        dirty = connection.execute(sa.select(sa.func.count()).where(users.c.stage_dirty)).scalar()
        assert dirty == 0
