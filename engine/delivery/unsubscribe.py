"""Unsubscribe tokens and the unsubscribe itself (RFC 8058 one-click and `nudge unsubscribe`).

A token is random, one per user, so a link cannot be forged for someone else and no
signing secret has to be configured. After its 32 random characters it carries its
user (the user id in base64url): a lookup by token then names the user, which is
what a store sharded by user needs to find the row on one shard, and two users'
tokens can never be equal (docs/scaling.md). Tokens made before that are exactly the
32 random characters and are still found by the token alone.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.errors import NotFoundError
from engine.store import Store
from engine.store.delivery import UnsubscribeToken
from engine.store.people import User
from engine.store.sql import among, dialect_insert

tokens = UnsubscribeToken.__table__
users = User.__table__


RANDOM_LENGTH = 32


def new_token(user_id: str) -> str:
    """32 random URL-safe characters that never start with "-" (a token pasted after
    `nudge unsubscribe` must not read as an option; it did, one time in 32), then the
    user id in unpadded base64url (URL-safe too, no separator needed)."""
    embedded = base64.urlsafe_b64encode(user_id.encode("utf-8")).decode("ascii").rstrip("=")
    return "u" + secrets.token_urlsafe(24)[1:] + embedded


def user_of_token(token: str) -> str | None:
    """The user a token names, or None for an older token (or garbage)."""
    embedded = token[RANDOM_LENGTH:]
    if not embedded:
        return None
    try:
        raw = base64.urlsafe_b64decode(embedded + "=" * (-len(embedded) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def token_matches(token: str) -> sa.ColumnElement[bool]:
    """WHERE clause for one token's row: by user and token when the token names its
    user (one shard), by token alone for an older token."""
    token = token.strip()
    user_id = user_of_token(token)
    if user_id is None:
        return tokens.c.token == token
    return sa.and_(tokens.c.user_id == user_id, tokens.c.token == token)


def ensure_tokens(connection: Connection, user_ids: Sequence[str], now: datetime) -> dict[str, str]:
    """The token of each user, created on first use (one INSERT, one SELECT)."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    rows = [{"token": new_token(u), "user_id": u, "created_at": now} for u in wanted]
    connection.execute(dialect_insert(connection, tokens).on_conflict_do_nothing(), rows)
    query = sa.select(tokens.c.user_id, tokens.c.token).where(among(tokens.c.user_id, wanted))
    return dict(connection.execute(query).all())


def unsubscribe(store: Store, token: str, *, now: datetime) -> str:
    """Unsubscribe the token's user from marketing email; returns the user id.

    Idempotent: unsubscribing twice keeps the first time. Planned emails not yet sent
    are skipped by the consent policy at send time, and the user leaves every
    audience on the next sync.
    """
    with store.begin() as connection:
        user_id = connection.execute(
            sa.select(tokens.c.user_id).where(token_matches(token))
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
            .where(token_matches(token), tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
    return user_id
