"""engine/store/sql.py: instant arithmetic is exact on both databases, whatever the
server's time zone (PostgreSQL adds calendar days in the session's zone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.store.sql import epoch_seconds, plus_duration
from engine.store.types import UTCDateTime

# Three days across Europe/Berlin's spring change (2026-03-29).
BEFORE = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)


def test_plus_duration_is_exact_across_dst(store):
    with store.connect() as connection:
        if connection.dialect.name == "postgresql":
            assert connection.execute(sa.text("SELECT current_setting('TimeZone')")).scalar() in (
                "UTC",
                "Etc/UTC",
            )
        instant = sa.literal(BEFORE, UTCDateTime())
        shifted = connection.execute(
            sa.select(plus_duration(instant, timedelta(days=3), connection.dialect.name))
        ).scalar()
        seconds = connection.execute(
            sa.select(epoch_seconds(instant, connection.dialect.name))
        ).scalar()
    assert shifted == BEFORE + timedelta(hours=72)
    assert seconds == int(BEFORE.timestamp())
