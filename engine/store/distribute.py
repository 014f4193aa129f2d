"""`nudge db distribute`: spread the store over a Citus cluster, by user.

Reads each table's declared placement (engine/store/placement.py) and makes it so:
per-user tables are distributed by their user column and co-located with `users`,
small shared tables become reference tables, and the outbox, the change counter and
the daemons stay on the coordinator as Citus local tables, where the dispatchers'
`FOR UPDATE SKIP LOCKED` claims work unchanged (docs/scaling.md).

Idempotent: a table already placed as declared is left alone, so it is safe to run
again after `nudge db upgrade` (which does it by itself on a distributed store: a new
table made by a migration is placed there). Refuses, in one line and before changing
anything, where Citus is absent or the cluster cannot take the outbox.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from engine.errors import NudgeError
from engine.store.database import Store
from engine.store.placement import (
    ANCHOR_TABLE,
    DISTRIBUTED,
    LOCAL,
    REFERENCE,
    distribution_column,
    placement_of,
)
from engine.store.tables import metadata


class CitusUnavailable(NudgeError):
    """The database cannot be distributed (not PostgreSQL, no Citus, no coordinator)."""


@dataclass
class Distribution:
    """What `distribute` did: tables placed now, and those already in place."""

    placed: list[tuple[str, str]] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)


def declared_tables() -> list[sa.Table]:
    """The tables in the order they must be placed: `users` first (the co-location
    anchor), the other distributed ones, then reference, then local tables."""
    order = {DISTRIBUTED: 1, REFERENCE: 2, LOCAL: 3}

    def rank(table: sa.Table) -> tuple[int, str]:
        if table.name == ANCHOR_TABLE:
            return (0, table.name)
        return (order[placement_of(table)], table.name)

    return sorted(metadata.tables.values(), key=rank)


def citus_installed(connection: Connection) -> bool:
    """True when the citus extension exists in this database (never on SQLite)."""
    if connection.dialect.name != "postgresql":
        return False
    query = sa.text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
    return connection.execute(query).first() is not None


def current_placements(connection: Connection) -> dict[str, str]:
    """Table name -> how Citus holds it now (pg_dist_partition), for Nudge's tables."""
    rows = connection.execute(
        sa.text(
            "SELECT c.relname, p.partmethod, p.repmodel, p.colocationid "
            "FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema()"
        )
    )
    placements = {}
    for name, method, replication, colocation in rows:
        if method == "h":
            placements[name] = DISTRIBUTED
        elif method == "n" and replication == "t":
            placements[name] = REFERENCE
        elif method == "n" and colocation == 0:
            placements[name] = LOCAL
        else:  # e.g. a single-shard table of schema-based sharding: not Nudge's doing
            placements[name] = f"other ({method}/{replication})"
    return placements


def is_distributed(store: Store) -> bool:
    """True when this store already has tables placed by Citus."""
    if store.dialect != "postgresql":
        return False
    with store.engine.connect() as connection:
        return citus_installed(connection) and bool(current_placements(connection))


# Engine -> whether its `users` table is distributed (see `users_distributed`).
_USERS_DISTRIBUTED: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def users_distributed(connection: Connection) -> bool:
    """True when this store's `users` table is a Citus distributed table.

    Asked once per engine and remembered (the statements that differ on a cluster run
    at every ingest); `distribute` forgets the answer for its store. Never true on
    SQLite or on a PostgreSQL without Citus.
    """
    if connection.dialect.name != "postgresql":
        return False
    engine = connection.engine
    known = _USERS_DISTRIBUTED.get(engine)
    if known is None:
        known = citus_installed(connection) and (
            current_placements(connection).get(ANCHOR_TABLE) == DISTRIBUTED
        )
        _USERS_DISTRIBUTED[engine] = known
    return known


def distribute(store: Store) -> Distribution:
    """Place every table as declared; see the module docstring."""
    _USERS_DISTRIBUTED.pop(store.engine, None)
    _refuse_unless_citus_available(store)
    from engine.store.migrations import ensure_current

    ensure_current(store)
    with store.engine.begin() as connection:
        _create_extension(connection)
    with store.engine.connect() as connection:
        _refuse_without_coordinator(connection)
        current = current_placements(connection)
    result = Distribution()
    for table in declared_tables():
        wanted = placement_of(table)
        have = current.get(table.name)
        if have == wanted:
            result.already.append((table.name, wanted))
            continue
        if have is not None:
            raise CitusUnavailable(
                f"table {table.name} is already a Citus {have} table but Nudge declares it "
                f"{wanted}: undo that placement (undistribute_table) and run this again"
            )
        # One transaction per table: a run that stops half-way is resumed by the next.
        with store.engine.begin() as connection:
            _place(connection, table, wanted)
        result.placed.append((table.name, wanted))
    _USERS_DISTRIBUTED.pop(store.engine, None)
    return result


def _refuse_unless_citus_available(store: Store) -> None:
    if store.dialect != "postgresql":
        raise CitusUnavailable(
            f"nudge db distribute needs PostgreSQL with the citus extension; this store is "
            f"{store.dialect} (see docs/scaling.md)"
        )
    query = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'citus'")
    with store.engine.connect() as connection:
        available = connection.execute(query).first() is not None
    if not available:
        raise CitusUnavailable(
            "the citus extension is not available on this PostgreSQL server: "
            "nudge db distribute needs a Citus coordinator (see docs/scaling.md)"
        )


def _create_extension(connection: Connection) -> None:
    if citus_installed(connection):
        return
    try:
        with connection.begin_nested():
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS citus")
    except sa.exc.DBAPIError as exc:  # e.g. not in shared_preload_libraries
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise CitusUnavailable(f"cannot create the citus extension: {reason}") from None


def _refuse_without_coordinator(connection: Connection) -> None:
    """Citus local tables (the outbox) and shards on a one-node cluster need the
    coordinator in the node list; its host name is the operator's to give."""
    query = sa.text("SELECT 1 FROM pg_dist_node WHERE groupid = 0")
    if connection.execute(query).first() is None:
        raise CitusUnavailable(
            "the Citus coordinator is not in its node list: run "
            "SELECT citus_set_coordinator_host('<this host>', <port>); on it, then again "
            "nudge db distribute"
        )


def _place(connection: Connection, table: sa.Table, placement: str) -> None:
    name = {"table": table.name}
    if placement == DISTRIBUTED:
        column = distribution_column(table)
        anchor = "default" if table.name == ANCHOR_TABLE else ANCHOR_TABLE
        connection.execute(
            sa.text(
                "SELECT create_distributed_table(CAST(:table AS regclass), :column, "
                "colocate_with => :anchor)"
            ),
            {**name, "column": column, "anchor": anchor},
        )
    elif placement == REFERENCE:
        connection.execute(sa.text("SELECT create_reference_table(CAST(:table AS regclass))"), name)
    elif placement == LOCAL:
        connection.execute(
            sa.text("SELECT citus_add_local_table_to_metadata(CAST(:table AS regclass))"), name
        )
        return  # a local table keeps its rows where they are
    else:
        raise ValueError(f"table {table.name}: unknown placement {placement!r}")
    # The rows were copied into shards (or every node); the coordinator's own copy is
    # now unused space.
    connection.execute(
        sa.text("SELECT truncate_local_data_after_distributing_table(CAST(:table AS regclass))"),
        name,
    )
