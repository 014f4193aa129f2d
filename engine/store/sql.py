"""SQL that differs between SQLite and PostgreSQL, written once.

Everything else in Nudge emits portable SQLAlchemy; the two places where the
dialects part ways (the ON CONFLICT insert and instant arithmetic) live here, so a
third backend (Citus is PostgreSQL) has one module to look at.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.store.types import UTCDateTime


def dialect_insert(connection: Connection, table: sa.Table):
    """INSERT with the dialect's ON CONFLICT support (PostgreSQL and SQLite share it).

    For INSERT ... SELECT with ON CONFLICT, end the SELECT with `.where(sa.true())`:
    SQLite cannot otherwise tell the ON CONFLICT from a join clause (its documented
    "parsing ambiguity").
    """
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def plus_duration(instant: sa.ColumnElement, delta: timedelta, dialect: str) -> sa.ColumnElement:
    """`instant + delta` in SQL, typed as an instant on both databases.

    SQLite stores instants as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'; the sum is
    formatted the same way so it still compares (and sorts) lexically with stored
    values and bound parameters. Sub-millisecond digits are dropped: strftime's %f
    has three.
    """
    if dialect == "postgresql":
        return sa.type_coerce(instant + sa.literal(delta, sa.Interval()), UTCDateTime())
    seconds = delta.total_seconds()
    shifted = sa.func.strftime("%Y-%m-%d %H:%M:%f", instant, f"{seconds:+.3f} seconds")
    return sa.type_coerce(shifted + sa.literal("000", sa.String), UTCDateTime())


def epoch_seconds(instant: sa.ColumnElement, dialect: str) -> sa.ColumnElement[int]:
    """Whole seconds since 1970 of a stored instant: a text-free, zone-free identity
    (PostgreSQL would render a timestamptz as text in the session's time zone)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(sa.extract("epoch", instant)), sa.BigInteger)
    return sa.cast(sa.func.strftime("%s", instant), sa.BigInteger)
