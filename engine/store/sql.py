"""SQL that differs between SQLite and PostgreSQL, written once.

Everything else in Nudge emits portable SQLAlchemy; the two places where the
dialects part ways (the ON CONFLICT insert and instant arithmetic) live here, so a
third backend (Citus is PostgreSQL) has one module to look at.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

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


class add_seconds(FunctionElement):
    """`instant + seconds` (an integer expression, per row or constant) as an instant,
    exact to the microsecond on both databases.

    PostgreSQL adds an interval of seconds (not days: sessions are in UTC anyway, and a
    day-interval would follow the session zone's DST); SQLite's date functions drop the
    fraction of its stored text 'YYYY-MM-DD HH:MM:SS.ffffff', which is carried over.
    The instant must be a column expression (its SQL text appears twice on SQLite).
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "add_seconds"


@compiles(add_seconds, "sqlite")
def _add_seconds_sqlite(element, compiler, **kw):
    instant, seconds = list(element.clauses)
    text = compiler.process(instant, **kw)
    return (
        f"(strftime('%Y-%m-%d %H:%M:%S', {text}, "
        f"'+' || CAST({compiler.process(seconds, **kw)} AS INTEGER) || ' seconds')"
        f" || substr({text}, 20))"
    )


@compiles(add_seconds, "postgresql")
def _add_seconds_postgresql(element, compiler, **kw):
    instant, seconds = list(element.clauses)
    return (
        f"({compiler.process(instant, **kw)} + "
        f"CAST({compiler.process(seconds, **kw)} AS INTEGER) * INTERVAL '1 second')"
    )


def plus_duration(instant: sa.ColumnElement, delta: timedelta, dialect: str) -> sa.ColumnElement:
    """`instant + delta` for a constant delta (whole seconds), typed as an instant.

    `dialect` is kept for callers' symmetry with other helpers; the construct compiles
    per dialect itself.
    """
    return add_seconds(instant, sa.literal(int(delta.total_seconds()), sa.Integer))


def epoch_seconds(instant: sa.ColumnElement, dialect: str) -> sa.ColumnElement[int]:
    """Whole seconds since 1970 of a stored instant: a text-free, zone-free identity
    (PostgreSQL would render a timestamptz as text in the session's time zone)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(sa.extract("epoch", instant)), sa.BigInteger)
    return sa.cast(sa.func.strftime("%s", instant), sa.BigInteger)
