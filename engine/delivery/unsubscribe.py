"""Unsubscribe tokens and the unsubscribe itself (RFC 8058 one-click and `nudge unsubscribe`).

A token is random (not derived from the user id), one per user, so a link cannot be
forged for someone else and no signing secret has to be configured.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.errors import NotFoundError
from engine.store import Store
from engine.store.delivery import UnsubscribeToken
from engine.store.people import User
from engine.store.sql import dialect_insert

tokens = UnsubscribeToken.__table__
users = User.__table__


def new_token() -> str:
    """32 URL-safe characters that never start with "-": a token pasted after
    `nudge unsubscribe` must not read as an option (it did, one time in 32)."""
    return "u" + secrets.token_urlsafe(24)[1:]


def ensure_tokens(connection: Connection, user_ids: Sequence[str], now: datetime) -> dict[str, str]:
    """The token of each user, created on first use (one INSERT, one SELECT)."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = [{"token": new_token(), "user_id": u, "created_at": now} for u in wanted]
    connection.execute(dialect_insert(connection, tokens).on_conflict_do_nothing(), rows)
    query = sa.select(tokens.c.user_id, tokens.c.token).where(tokens.c.user_id.in_(wanted))
    return dict(connection.execute(query).all())


def unsubscribe(store: Store, token: str, *, now: datetime) -> str:
    """Unsubscribe the token's user from marketing email; returns the user id.

    Idempotent: unsubscribing twice keeps the first time. Planned emails not yet sent
    are skipped by the consent policy at send time, and the user leaves every
    audience on the next sync.
    """
    with store.begin() as connection:
        user_id = connection.execute(
            sa.select(tokens.c.user_id).where(tokens.c.token == token.strip())
        ).scalar()
        if user_id is None:
            raise NotFoundError("unknown unsubscribe token (check that it was copied whole)")
        connection.execute(
            sa.update(users)
            .where(users.c.id == user_id, users.c.unsubscribed_at.is_(None))
            .values(unsubscribed_at=now, updated_at=now)
        )
        connection.execute(
            sa.update(tokens)
            .where(tokens.c.token == token.strip(), tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
    return user_id
