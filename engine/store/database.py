"""Database URL -> engine, with the same behaviour on SQLite and PostgreSQL.

SQLite is the embedded default (a file in the project folder, WAL mode); PostgreSQL
is chosen only by the URL (`postgresql+psycopg://...`).

Readers and writers open their connections differently:

- `store.begin()` / `store.connect()` are the writing paths. On SQLite every
  transaction they start is `BEGIN IMMEDIATE`: it takes the one write lock up front,
  so two writers queue on busy_timeout instead of one failing with "database is
  locked" when it upgrades a read to a write half-way through.
- `store.read()` is the read-only path (status, stats, users show, exports, the
  store checks of `check`). On SQLite its transactions are `BEGIN DEFERRED` with
  `PRAGMA query_only`: a WAL reader that never blocks the daemon's writes nor waits
  for them. On PostgreSQL they are `SET TRANSACTION READ ONLY`. A read path that
  writes by mistake fails loudly on both backends instead of silently taking the
  write lock.

A dry-run (and the verdict `explain` gets from it) stays on the writing path: it
writes the stage refresh and its plan into the real tables and rolls them back. A
deferred transaction would not spare the daemon: the first write (the stage refresh)
comes about 10-20 ms into a 100-200 ms dry-run of the 5,000-user demo shop, and
from then on the lock is held until the rollback anyway. And a WAL read that
upgrades to a write fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT,
busy_timeout is not consulted) whenever another connection wrote since the read
began, which with a running daemon happens. So a dry-run waits for the daemon's
current write, then holds the lock for its own duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from engine.config import Settings
from engine.errors import ConfigError
from engine.store.buckets import sqlite_md5_bucket, sqlite_md5_hex

# The execution option `Store.read()` sets on its connection; the "begin" listeners
# read it to open a read-only transaction instead of a writing one.
READ_ONLY_OPTION = "nudge_read_only"

# How long (seconds) a SQLite writer waits for another's write lock before "database
# is locked". Read when each connection opens (tests shorten it).
SQLITE_BUSY_TIMEOUT = 30.0


@dataclass
class Store:
    """An open database plus the settings it belongs to."""

    engine: Engine
    settings: Settings

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One write transaction: committed on success, rolled back on any exception.

        On SQLite it holds the database's write lock (BEGIN IMMEDIATE) until then.
        """
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for writing: on SQLite each of its transactions (explicit or
        begun by the first statement) holds the write lock, BEGIN IMMEDIATE.

        Read-only work uses `read()` instead, so it neither blocks nor waits for the
        daemon's writes.
        """
        with self.engine.connect() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading only; whatever it began is rolled back at the end.

        SQLite: `BEGIN DEFERRED` under `PRAGMA query_only`, a WAL snapshot that takes
        no write lock: it neither blocks writers nor waits for them. PostgreSQL:
        `SET TRANSACTION READ ONLY`. Any write (temporary tables included) raises
        on both, so a read path that starts writing fails in the tests.
        """
        with self.engine.connect() as connection:
            connection.execution_options(**{READ_ONLY_OPTION: True})  # in place
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def create_engine_for(url: str) -> Engine:
    """An engine for `url` with Nudge's connection settings applied."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError with a terse message
        raise ConfigError(f"database.url: cannot parse {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # psycopg 3 is the driver Nudge installs; plain "postgresql://" would pick psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        return _postgres_engine(parsed)
    raise ConfigError(
        f"database.url: unsupported database {backend!r}; use sqlite:///FILE or "
        "postgresql+psycopg://USER@HOST/DB"
    )


def _sqlite_engine(url: str) -> Engine:
    # Pooled (SQLAlchemy's QueuePool, its default for a file): opening a SQLite
    # connection for each transaction and closing it again cost about a fifth of an
    # idle tick and 8 % of a no-op dispatch (bench/README.md). Several processes
    # (planner, dispatcher) still share the file (WAL), with as many connections at
    # once as before (no overflow limit); `store.dispose()` closes the idle ones. What
    # a connection carries from one use to the next is handled where it is set:
    # `query_only` (below), the ingest writer's cache and temp store
    # (engine/ingest/writers.py: its connection leaves the pool).
    parsed = make_url(url)
    in_memory = parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    # (An in-memory database keeps SQLAlchemy's one connection per thread.)
    pooling = {} if in_memory else {"pool_size": 5, "max_overflow": -1}
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **pooling)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control away from pysqlite so BEGIN is emitted by us
        # (SQLAlchemy's documented recipe); otherwise SAVEPOINT and rollback of
        # a dry-run would not cover every statement.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.close()
        # PostgreSQL has md5(); SQLite gets the same assignment hash so holdout and
        # variant buckets are computed in SQL identically on both.
        dbapi_connection.create_function("nudge_bucket", 1, sqlite_md5_bucket, deterministic=True)
        # md5() as PostgreSQL has it (hex digest): idempotency keys are hashed in SQL.
        dbapi_connection.create_function("md5", 1, sqlite_md5_hex, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        read_only = _is_read_only(connection)
        # query_only belongs to the SQLite connection, not to the transaction: set it
        # whenever it must change, so a pooled connection never carries it over.
        info = connection.connection.info
        if info.get("nudge_query_only", False) != read_only:
            connection.exec_driver_sql(f"PRAGMA query_only={'ON' if read_only else 'OFF'}")
            info["nudge_query_only"] = read_only
        if read_only:
            # A WAL reader: a snapshot at its first read, no lock that blocks writers.
            connection.exec_driver_sql("BEGIN DEFERRED")
        else:
            # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
            # instead of one failing with "database is locked" when it upgrades later.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url) -> Engine:
    # Sessions in UTC: `timestamptz + interval` adds calendar days in the session's
    # zone, so a server set to Europe/Berlin would make "3 days" 71 hours across DST.
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"options": "-c timezone=UTC"},
    )

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        if _is_read_only(connection):
            # The transaction's first statement (psycopg opens it implicitly); a write
            # in it raises ReadOnlySqlTransaction. Never through a server-side cursor,
            # which a streaming read (stream_results) would otherwise give it.
            connection.exec_driver_sql(
                "SET TRANSACTION READ ONLY", execution_options={"stream_results": False}
            )

    return engine


def _is_read_only(connection: Connection) -> bool:
    return bool(connection.get_execution_options().get(READ_ONLY_OPTION, False))


def open_store(settings: Settings, *, check_schema: bool = True) -> Store:
    """Open the configured database; refuse an out-of-date schema unless told not to."""
    store = Store(engine=create_engine_for(settings.database_url), settings=settings)
    if check_schema:
        from engine.store.migrations import ensure_current

        # Only reads the schema revision: as a reader, so that opening the store for
        # `nudge status` does not wait for a daemon's write lock.
        reader = store.engine.execution_options(**{READ_ONLY_OPTION: True})
        ensure_current(Store(engine=reader, settings=settings))
    return store
