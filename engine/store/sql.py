"""SQL that differs between SQLite and PostgreSQL, written once.

Everything else in Nudge emits portable SQLAlchemy; the places where the dialects
part ways (the ON CONFLICT insert, instant arithmetic, a list of values as one
parameter) live here, so a third backend (Citus is PostgreSQL) has one module to look
at.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

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


class _ValueList(sa.types.TypeDecorator):
    """A Python list bound as one parameter: an array on PostgreSQL, a JSON array on
    SQLite (read back by json_each)."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, item_type: sa.types.TypeEngine):
        super().__init__()
        self.item_type = item_type

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(self.item_type))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value, dialect):
        if dialect.name == "postgresql":
            return list(value)
        return orjson.dumps(list(value)).decode()


class among(ColumnElement[bool]):
    """`column IN (values)` with the values bound as one parameter, however many.

    An expanding IN renders a placeholder per value on every execution: for a batch of
    a thousand ids that rendering (and psycopg's parsing of the long query it makes,
    which it does not cache) cost more than the statement's execution, and each new
    length was a new statement for SQLite to prepare. With one parameter the SQL text
    never changes. PostgreSQL: `column = ANY(array)`, planned like the IN list (an
    index scan). SQLite: `column IN (SELECT value FROM json_each(?))`, one primary-key
    probe per value. The values must be strings or integers (what JSON keeps exact).
    """

    type = sa.Boolean()
    inherit_cache = True
    # A comparison in its own right: SQLite must not get `... = 1` after it.
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", sa.sql.visitors.InternalTraversal.dp_clauseelement),
        ("values", sa.sql.visitors.InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement, values: Iterable):
        self.column = column
        self.values = sa.bindparam(None, list(values), type_=_ValueList(column.type))

    @property
    def _from_objects(self):
        # The column's table: a SELECT of nothing else still reads FROM it.
        return self.column._from_objects


@compiles(among, "postgresql")
def _among_postgresql(element, compiler, **kw):
    column, values = compiler.process(element.column, **kw), compiler.process(element.values, **kw)
    return f"{column} = ANY({values})"


@compiles(among)
def _among_sqlite(element, compiler, **kw):
    return (
        f"{compiler.process(element.column, **kw)} IN "
        f"(SELECT value FROM json_each({compiler.process(element.values, **kw)}))"
    )
