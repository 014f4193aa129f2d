"""Planner statistics for what planning has just written or is about to read
(PostgreSQL; SQLite plans without statistics and Nudge never runs ANALYZE there).

PostgreSQL's autovacuum re-analyses a table some time after a tenth of it changed;
temporary tables it never analyses at all. Planning reads what it has just written:
a follow-up reads the decisions and outbox rows its followed rule wrote a moment
earlier in the same evaluation, and a first sweep can multiply those tables. With
statistics taken before, the planner estimates those rows at next to none and picks
plans that are fine for none and ruinous for thousands (a bitmap AND over every
pending outbox row per followed decision, a nested loop over all users). So:

- `analyze_scratch`: a temporary table planning fills and then joins is analysed at
  once (it is private to the connection and small: milliseconds);
- `note_written` counts the rows planning wrote to a shared table (decisions, outbox)
  on this connection, and `refresh_stale` analyses such a table before a follow-up
  reads it, once those rows are many against what its statistics describe: what
  autovacuum would do a little later, done in the reader's transaction. Only the
  columns planning reads are analysed. Statistics are only a hint: if the table's lock
  is not free at once (autovacuum or another daemon analysing it) the refresh is
  skipped, never waited for.
- at the end of an evaluation that wrote ≥ MIN_ROWS rows, whatever their share of the
  table, once: a rule whose decisions the statistics have never seen is estimated at
  one row, and the next ticks' follow-up checks ("any of these occurrences not decided
  yet?") were planned as a nested loop over thousands (230 ms at 200,000 users for 1,472
  rows, every tick of the quarter hour after a sweep).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from engine.store.distribute import users_distributed

# Analyse a shared table once planning wrote at least this many rows to it since it
# last analysed it, and at least this fraction of the rows its statistics describe
# (autovacuum's default scale factor is 0.1; its threshold 50 rows is far too eager
# for a statement-per-table cost on every small rule).
MIN_ROWS = 1_000
FRACTION = 0.1
# How long an ANALYZE may wait for its table's lock before it is skipped.
LOCK_TIMEOUT = "50ms"
_PENDING = "nudge_rows_since_analyze"


def collects_statistics(connection: Connection) -> bool:
    """PostgreSQL, not a Citus cluster (whose tables are analysed on their shards)."""
    return connection.dialect.name == "postgresql" and not users_distributed(connection)


def analyze_scratch(connection: Connection, table: sa.Table) -> None:
    """Analyse a temporary table this connection has just filled."""
    if collects_statistics(connection):
        connection.exec_driver_sql(f"ANALYZE {_quoted(connection, table)}")


def note_written(connection: Connection, table: sa.Table, rows: int) -> None:
    """Count `rows` rows planning just wrote to `table` on this connection."""
    if rows > 0 and collects_statistics(connection):
        pending = connection.info.setdefault(_PENDING, {})
        pending[table.name] = pending.get(table.name, 0) + rows


def refresh_stale(
    connection: Connection,
    tables: dict[sa.Table, tuple[str, ...]],
    *,
    fraction: float = FRACTION,
) -> list[str]:
    """Analyse (those columns of) each table whose statistics miss many rows this
    connection wrote (≥ MIN_ROWS, and ≥ `fraction` of the rows they describe); returns
    the tables analysed."""
    if not collects_statistics(connection):
        return []
    pending = connection.info.setdefault(_PENDING, {})
    analysed = []
    for table, columns in tables.items():
        written = pending.get(table.name, 0)
        if written < MIN_ROWS:
            continue
        described = connection.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)"),
            {"name": table.name},
        ).scalar()
        # -1: never analysed; 0: analysed while empty.
        if described is not None and described > 0 and written < fraction * described:
            continue
        if _analyze_if_free(connection, table, columns):
            pending[table.name] = 0
            analysed.append(table.name)
    return analysed


def _analyze_if_free(connection: Connection, table: sa.Table, columns: tuple[str, ...]) -> bool:
    previous = connection.exec_driver_sql("SHOW lock_timeout").scalar()
    savepoint = connection.begin_nested()
    try:
        connection.execute(sa.select(sa.func.set_config("lock_timeout", LOCK_TIMEOUT, True)))
        quote = connection.dialect.identifier_preparer.quote
        listed = ", ".join(quote(column) for column in columns)
        connection.exec_driver_sql(f"ANALYZE {_quoted(connection, table)} ({listed})")
    except OperationalError:
        savepoint.rollback()  # also undoes the lock_timeout
        return False
    savepoint.commit()
    connection.execute(sa.select(sa.func.set_config("lock_timeout", previous, True)))
    return True


def _quoted(connection: Connection, table: sa.Table) -> str:
    return connection.dialect.identifier_preparer.format_table(table)
