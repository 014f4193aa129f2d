"""The users whose data changed since the last stage refresh: ingest sets their
stage_dirty flag (engine/store/profiles.py `refresh_profiles`), the refresh
recomputes them and clears the flags it read.

Found through the partial index ix_users_stage_dirty (users whose flag is set), so
that with nothing flagged the look costs one index probe however many users there
are; `FLAGGED` is written exactly as the index's predicate, which both SQLite and
PostgreSQL need to see to use it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.lifecycle.tables import users_table
from engine.store.distribute import users_distributed
from engine.store.profiles import lock_users_by_advisory_lock

FLAGGED = users_table.c.stage_dirty.is_(True)

_DIRTY = sa.Table(
    "nudge_stage_dirty",
    sa.MetaData(),
    sa.Column("id", sa.String(128), primary_key=True),
    prefixes=["TEMPORARY"],
)


def any_flagged(connection: Connection) -> bool:
    flagged = sa.select(users_table.c.id).where(FLAGGED)
    return bool(connection.execute(sa.select(sa.exists(flagged))).scalar())


def snapshot_dirty(connection: Connection) -> sa.Table:
    """The users flagged stage_dirty now, copied into a temporary table.

    The refresh recomputes exactly these (plus time-driven crossings) and clears
    exactly these flags (`clear_flags`). On PostgreSQL the rows are locked for the
    transaction: an ingest for one of them waits and flags it again after this
    refresh commits, so its new data is never cleared unseen. (SQLite serialises
    writers already.) The table has a fixed name (temporary tables are private to a
    connection) so that the statements using it compile once.
    """
    table = _DIRTY
    table.drop(connection, checkfirst=True)
    table.create(connection)
    flagged = sa.select(users_table.c.id).where(FLAGGED)
    if users_distributed(connection):
        # Citus refuses a multi-shard FOR UPDATE: the same advisory locks as ingest,
        # taken in the same order (engine/store/profiles.py).
        ids = sorted(connection.execute(flagged).scalars())
        lock_users_by_advisory_lock(connection, ids)
        if ids:
            connection.execute(table.insert(), [{"id": user_id} for user_id in ids])
        return table
    if connection.dialect.name == "postgresql":
        # In id order, as ingest locks them (engine/store/profiles.py): no deadlock.
        flagged = flagged.order_by(users_table.c.id).with_for_update()
    connection.execute(table.insert().from_select(["id"], flagged))
    return table


def clear_flags(connection: Connection, dirty: sa.Table) -> None:
    """Clear the flags the snapshot read, and drop it. Only those: a user dirtied by an
    ingest that committed in the meantime keeps the flag and is looked at by the next
    refresh."""
    connection.execute(
        users_table.update()
        .where(users_table.c.id.in_(sa.select(dirty.c.id)))
        .values(stage_dirty=False)
    )
    dirty.drop(connection)
