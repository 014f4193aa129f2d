""" "Something new to do": how ingest wakes the daemons within a second.

Every transaction that may give rules something new (ingested events and users,
later the event API) calls `signal_change` before it commits: it bumps a counter row
and, on PostgreSQL, sends NOTIFY (delivered at commit, never for a rolled-back
transaction). A daemon waits with `ChangeWatcher.wait`: LISTEN on PostgreSQL, a
one-row read of the counter every poll interval on SQLite (and on PostgreSQL after a
quiet timeout, in case a notification was lost with a dropped connection).
"""

from __future__ import annotations

import contextlib
import threading

import sqlalchemy as sa
from sqlalchemy import Connection

from engine import clock
from engine.store.planning import ChangeCounter

counters = ChangeCounter.__table__
CHANNEL = "nudge_data"
COUNTER = "data"


def signal_change(connection: Connection) -> None:
    """Mark new data, inside the caller's transaction."""
    connection.execute(
        counters.update().where(counters.c.name == COUNTER).values(version=counters.c.version + 1)
    )
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def data_version(connection: Connection) -> int:
    query = sa.select(counters.c.version).where(counters.c.name == COUNTER)
    return connection.execute(query).scalar() or 0


class ChangeWatcher:
    """Waits until new data is committed, the timeout passes, or `stop` is set."""

    def __init__(self, store, *, poll_seconds: float):
        self.store = store
        self.poll_seconds = poll_seconds
        self._listener = None
        with store.read() as connection:
            self._seen = data_version(connection)
        if store.engine.dialect.name == "postgresql":
            self._listen()

    def _listen(self) -> None:
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        self._listener = psycopg.connect(dsn, autocommit=True)
        self._listener.execute(f"LISTEN {CHANNEL}")

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close
                self._listener.close()
            self._listener = None

    def reset(self) -> None:
        """After an error: drop the LISTEN connection and listen again when possible;
        until then the counter is polled."""
        self.close()
        if self.store.engine.dialect.name == "postgresql":
            with contextlib.suppress(Exception):
                self._listen()

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """True as soon as new data is committed; False on timeout or stop."""
        deadline = clock.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                # The counter catches what a lost notification would have said.
                return self._changed()
            step = min(self.poll_seconds, remaining)
            if self._listener is not None:
                # Short steps, so that `stop` is noticed within a poll interval.
                if any(True for _ in self._listener.notifies(timeout=step, stop_after=1)):
                    self._changed()
                    return True
            elif stop.wait(step) or self._changed():
                return not stop.is_set()
        return False

    def _changed(self) -> bool:
        with self.store.read() as connection:
            version = data_version(connection)
        changed = version != self._seen
        self._seen = version
        return changed
