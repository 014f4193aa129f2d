"""engine/store/sql.py: instant arithmetic is exact on both databases, whatever the
server's time zone (PostgreSQL adds calendar days in the session's zone); `among`
(a list of values as one parameter) selects what an IN list would, at any length."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.store.sql import among, epoch_seconds, plus_duration
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


def scratch_rows(connection, count: int) -> sa.Table:
    """A table of `count` rows: id 1..count, name 'n<id>'."""
    table = sa.Table(
        "among_scratch",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(32), nullable=False),
    )
    table.create(connection)
    connection.execute(table.insert(), [{"id": i, "name": f"n{i}"} for i in range(1, count + 1)])
    return table


def test_among_selects_exactly_the_listed_values(store):
    with store.connect() as connection, connection.begin():
        table = scratch_rows(connection, 50)

        def ids(condition) -> list[int]:
            query = sa.select(table.c.id).where(condition).order_by(table.c.id)
            return list(connection.execute(query).scalars())

        assert ids(among(table.c.id, [7, 3, 3, 99, 12])) == [3, 7, 12]
        assert ids(among(table.c.name, ["n5", "n50", "x", "n5"])) == [5, 50]
        assert ids(among(table.c.id, [])) == []
        assert ids(~among(table.c.id, range(2, 51))) == [1]
        # In a write, fenced by another condition, with RETURNING (as claims.py uses it).
        update = (
            sa.update(table)
            .where(among(table.c.id, [1, 2, 3]), table.c.name != "n2")
            .values(name="done")
            .returning(table.c.id)
        )
        assert sorted(connection.execute(update).scalars()) == [1, 3]
        connection.rollback()


def test_among_takes_more_values_than_a_statement_takes_parameters(store):
    """An expanding IN list binds one parameter per value: SQLite refuses more than
    32,766 and PostgreSQL's protocol more than 65,535."""
    with store.connect() as connection, connection.begin():
        table = scratch_rows(connection, 10)
        wanted = [*range(1, 70_001)]
        count = sa.select(sa.func.count()).where(among(table.c.id, wanted))
        assert connection.execute(count).scalar_one() == 10
        connection.rollback()


def test_among_is_the_same_statement_at_every_length(store):
    """What makes it cheap: one SQL text, whatever the number of values (an expanding
    IN renders, and the database prepares, a new one per length)."""
    table = sa.table("t", sa.column("id", sa.BigInteger))
    dialect = store.engine.dialect
    texts = {
        str(sa.select(table.c.id).where(among(table.c.id, range(n))).compile(dialect=dialect))
        for n in (1, 2, 1000)
    }
    assert len(texts) == 1
