"""The sources conditions are compiled against: one stage CASE per instant and
lifecycle settings, shared by the rules of a tick, and never one of other settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.planning.sources import build_sources
from engine.store.people import User
from tests.planning.helpers import ingest

T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
users = User.__table__


def _stage_of(connection, sources, user_id: str) -> str | None:
    joined = users.outerjoin(sources.profiles, sources.profiles.c.user_id == users.c.id)
    query = sa.select(sources.stage).select_from(joined).where(users.c.id == user_id)
    return connection.execute(query).scalar()


def test_the_stage_follows_the_lifecycle_settings_it_is_built_with(store, settings, tmp_path):
    bought = (T - timedelta(days=100)).isoformat()
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "u1", "member_since": bought}],
        events=[{"user": "u1", "type": "purchase", "at": bought, "amount": 30}],
    )
    seen = {}
    for lapsed_days in (90, 120, 90):
        lifecycle = settings.lifecycle.model_copy(update={"lapsed_days": lapsed_days})
        edited = settings.model_copy(update={"lifecycle": lifecycle})
        with store.connect() as connection:
            first = build_sources(connection, edited, T, event_trigger=False)
            second = build_sources(connection, edited, T, event_trigger=True)
            # The rules of one tick share the expression (built once per T and settings).
            assert second.stage is first.stage and second.profiles is first.profiles
            seen.setdefault(lapsed_days, []).append(_stage_of(connection, first, "u1"))
    # Bought 100 days ago: lapsed after 90 days, not yet after 120; and back again.
    assert seen == {90: ["lapsed_member", "lapsed_member"], 120: ["first_purchase"]}
