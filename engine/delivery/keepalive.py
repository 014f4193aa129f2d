"""Keeping a SQLite database open while a dispatcher drains it.

The SQLite engine opens a connection per transaction (NullPool, so several processes
can share the file). When the last connection to a WAL database closes, SQLite
checkpoints the WAL into the database and deletes it: about a millisecond, paid by
every short transaction of a dispatch pass (claim, contacts, consent, record, settle)
when nothing else has the file open. One idle connection held for the pass makes each
of them a plain open and close. It holds no lock and begins no transaction: other
readers and writers are not affected, and SQLite's own auto-checkpoint still runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.store import Store


@contextmanager
def database_kept_open(store: Store) -> Iterator[None]:
    if store.dialect != "sqlite":
        yield  # a pooled server connection: nothing to keep
        return
    connection = store.engine.connect()
    try:
        yield
    finally:
        connection.close()
