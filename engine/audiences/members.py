"""Audience membership: who is in an audience now, and who must leave it.

Members are added by delivered `audience` actions (engine/actions/audience.py). They
leave when they withdraw ads consent or unsubscribe (`remove_withdrawn`, run before
every sync and export) or when a rule says they no longer qualify
(`remove_members`, for the planner). Rows are kept with `removed_at` as history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.store.delivery import AudienceMember
from engine.store.people import User

members = AudienceMember.__table__
users = User.__table__


def consenting_members(audience: str) -> sa.Select:
    """Active members with ads consent and no unsubscribe, joined to their user row."""
    return (
        sa.select(users)
        .join(members, members.c.user_id == users.c.id)
        .where(
            members.c.audience == audience,
            members.c.removed_at.is_(None),
            users.c.ads_opt_in.is_(True),
            users.c.unsubscribed_at.is_(None),
        )
    )


def remove_withdrawn(connection: Connection, *, now: datetime, audience: str | None = None) -> int:
    """Mark members without ads consent, unsubscribed, or deleted as removed (set-based)."""
    total = 0
    user = sa.select(users.c.id).where(users.c.id == members.c.user_id)
    for reason, condition in (
        ("no_user", ~sa.exists(user)),
        ("unsubscribed", sa.exists(user.where(users.c.unsubscribed_at.is_not(None)))),
        ("no_ads_consent", sa.exists(user.where(users.c.ads_opt_in.is_(False)))),
    ):
        statement = (
            sa.update(members)
            .where(members.c.removed_at.is_(None), condition)
            .values(removed_at=now, removed_reason=reason)
        )
        if audience is not None:
            statement = statement.where(members.c.audience == audience)
        total += connection.execute(statement).rowcount
    return total


def remove_members(
    connection: Connection,
    audience: str,
    user_ids: Sequence[str],
    *,
    now: datetime,
    reason: str = "no_longer_qualifies",
) -> int:
    """Remove the given users from `audience` (the planner's exit conditions)."""
    return connection.execute(
        sa.update(members)
        .where(
            members.c.audience == audience,
            members.c.user_id.in_(list(user_ids)),
            members.c.removed_at.is_(None),
        )
        .values(removed_at=now, removed_reason=reason)
    ).rowcount


def audience_exists(connection: Connection, audience: str) -> bool:
    query = sa.select(sa.literal(1)).where(members.c.audience == audience).limit(1)
    return connection.execute(query).first() is not None


def known_audiences(connection: Connection) -> list[str]:
    return list(connection.execute(sa.select(members.c.audience).distinct()).scalars())
