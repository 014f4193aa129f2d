"""One user's recorded stage history."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.lifecycle.tables import memberships


def stage_history(connection: Connection, user_id: str) -> list[dict]:
    """Every recorded stay of one user, oldest first."""
    rows = connection.execute(
        sa.select(
            memberships.c.stage,
            memberships.c.entered_at,
            memberships.c.exited_at,
            memberships.c.recorded_at,
        )
        .where(memberships.c.user_id == user_id)
        .order_by(memberships.c.entered_at, memberships.c.id)
    )
    return [dict(row._mapping) for row in rows]
