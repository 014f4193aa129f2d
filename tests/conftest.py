"""Shared fixtures: a store parametrised over SQLite and PostgreSQL.

PostgreSQL tests use the server at NUDGE_TEST_POSTGRES_URL and a database created
for this test session (one per xdist worker), dropped at the end. When the server is
absent they skip with the reason, unless NUDGE_REQUIRE_SERVICES is set (as in CI),
where they fail instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings

from engine.config import Settings, load_settings
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.migrations import upgrade
from engine.store.tables import metadata

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUIRE_SERVICES = bool(os.environ.get("NUDGE_REQUIRE_SERVICES"))

# The property tests (hypothesis) draw new examples on every local run, keeping any
# failure in .hypothesis/ for the next. In CI they run the examples derived from each
# test itself (derandomize): the same ones on every run, so that whether a change lands
# depends on the change, never on a random draw that finds an old bug.
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.load_profile(
    os.environ.get("NUDGE_HYPOTHESIS_PROFILE", "ci" if REQUIRE_SERVICES else "dev")
)


# Headless Debian chromium for the browser tests: no sandbox (root in CI), no network of
# its own, so a page's requests are only the ones the test serves.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` tests first, in their usual order, then the rest in theirs.

    The slow ones (a 30 s load, 20 s of streaming to three daemons) mostly wait on
    their servers and daemons. `make test` runs three xdist workers on two cores and
    hands the first third of this order to one of them (`--dist worksteal`): that
    worker spends its first two minutes mostly waiting while the other two keep both
    cores busy. Last, where the default order put them, they kept one worker busy
    while the others had nothing left to take.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def service_missing(reason: str) -> None:
    """Skip locally, fail in CI: a missing service must never turn CI green."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (NUDGE_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def make_settings(project_dir: Path, **sections) -> Settings:
    """Settings for a scratch project; `sections` are nudge.toml sections as dicts."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, list | tuple):
                items = ", ".join(f'"{v}"' for v in value)
                lines.append(f"{key} = [{items}]")
            else:
                lines.append(f"{key} = {value}")
    (project_dir / "nudge.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_settings(project_dir, environ={})


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str | None]:
    """A database of our own on the PostgreSQL server, or None when there is none."""
    base = os.environ.get("NUDGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"nudge_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError:
        yield None
        return
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    engine = create_engine_for(url)
    upgrade(Store(engine=engine, settings=Settings()))
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_engine_for(f"sqlite:///{path}")
    upgrade(Store(engine=engine, settings=Settings()))
    # NullPool closed the last connection, which checkpointed the WAL into the file.
    engine.dispose()
    assert not (path.parent / "template.db-wal").exists()
    return path


@pytest.fixture
def project_dir(tmp_path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    return folder


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store_url(backend, project_dir, sqlite_template, request) -> str:
    if backend == "sqlite":
        path = project_dir / "nudge.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_server_url")
    if url is None:
        service_missing("PostgreSQL is not reachable at NUDGE_TEST_POSTGRES_URL")
    _truncate_all(url)
    return url


@pytest.fixture
def empty_url(backend, tmp_path):
    """A database with no schema at all, on the parametrised backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    base = os.environ.get("NUDGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"nudge_mig_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError:
        service_missing("PostgreSQL is not reachable at NUDGE_TEST_POSTGRES_URL")
    try:
        yield sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# Every table the truncation empties: all but the install id and the change counter's
# row, which the migration makes once, like a real database's (the counter is reset).
KEPT_TABLES = {"installation", "change_counters"}
TRUNCATED_TABLES = [table.name for table in metadata.sorted_tables if table.name not in KEPT_TABLES]
# A TRUNCATE costs a new file per table, whether it held rows or not: most tests touch a
# few of the tables, so only those are truncated. A table is touched when it holds rows
# or when a sequence it owns was drawn from (rows inserted and deleted, or rolled back):
# truncating it restarts that sequence too, so ids start at 1 as in a fresh database.
ROWS_PROBE = " UNION ALL ".join(
    f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in TRUNCATED_TABLES
)
DRAWN_SEQUENCE_OWNERS = """
    SELECT DISTINCT tab.relname FROM pg_depend dep
    JOIN pg_class seq ON seq.oid = dep.objid AND seq.relkind = 'S'
    JOIN pg_class tab ON tab.oid = dep.refobjid
    JOIN pg_sequences used ON used.schemaname = current_schema() AND used.sequencename = seq.relname
    WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
      AND dep.deptype IN ('a', 'i') AND used.last_value IS NOT NULL
"""


def _truncate_all(url: str) -> None:
    """Every table but KEPT_TABLES as the migration left it: no rows, sequences at 1."""
    engine = create_engine_for(url)
    with engine.begin() as connection:
        touched = set(connection.exec_driver_sql(ROWS_PROBE).scalars())
        touched |= set(connection.exec_driver_sql(DRAWN_SEQUENCE_OWNERS).scalars())
        names = ", ".join(f'"{name}"' for name in TRUNCATED_TABLES if name in touched)
        if names:
            connection.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        connection.exec_driver_sql("UPDATE change_counters SET version = 0")
    engine.dispose()


@pytest.fixture
def settings(project_dir, store_url) -> Settings:
    """Settings of a scratch project whose database is the parametrised store."""
    return make_settings(
        project_dir,
        shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
        database={"url": store_url},
    )


@pytest.fixture
def store(settings) -> Iterator[Store]:
    from engine.store import open_store

    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.dispose()
