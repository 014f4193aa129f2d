"""Database URL -> engine, with the same behaviour on SQLite and PostgreSQL.

SQLite is the embedded default (a file in the project folder, WAL mode); PostgreSQL
is chosen only by the URL (`postgresql+psycopg://...`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from engine.config import Settings
from engine.errors import ConfigError
from engine.planning.assignment import sqlite_md5_bucket, sqlite_md5_hex


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
        """One transaction: committed on success, rolled back on any exception."""
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
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
        return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    raise ConfigError(
        f"database.url: unsupported database {backend!r}; use sqlite:///FILE or "
        "postgresql+psycopg://USER@HOST/DB"
    )


def _sqlite_engine(url: str) -> Engine:
    # NullPool: each connection is opened on demand, so several processes (planner,
    # dispatcher) can share the file, and tests can delete it afterwards.
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

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
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        # PostgreSQL has md5(); SQLite gets the same assignment hash so holdout and
        # variant buckets are computed in SQL identically on both.
        dbapi_connection.create_function("nudge_bucket", 1, sqlite_md5_bucket, deterministic=True)
        # md5() as PostgreSQL has it (hex digest): idempotency keys are hashed in SQL.
        dbapi_connection.create_function("md5", 1, sqlite_md5_hex, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
        # instead of one failing with "database is locked" when it upgrades later.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def open_store(settings: Settings, *, check_schema: bool = True) -> Store:
    """Open the configured database; refuse an out-of-date schema unless told not to."""
    store = Store(engine=create_engine_for(settings.database_url), settings=settings)
    if check_schema:
        from engine.store.migrations import ensure_current

        ensure_current(store)
    return store
