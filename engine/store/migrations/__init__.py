"""Alembic migrations, run programmatically (`nudge db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from engine.errors import SchemaOutOfDateError

HERE = Path(__file__).parent


def alembic_config(store) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["engine"] = store.engine
    return config


def head_revision() -> str:
    script = ScriptDirectory(str(HERE))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(store) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(store, revision: str = "head") -> tuple[str | None, str]:
    """Bring the schema to `revision`; returns (before, after).

    On a store already distributed over Citus, a table a migration created is placed
    as its model declares right after (engine/store/distribute.py, idempotent).
    """
    from engine.store.distribute import distribute, is_distributed

    before = current_revision(store)
    command.upgrade(alembic_config(store), revision)
    after = current_revision(store) or ""
    if after == head_revision() and is_distributed(store):
        distribute(store)
    return before, after


def ensure_current(store) -> None:
    """Raise with the command to run when the schema is missing or old."""
    current = current_revision(store)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDateError(
            f"the database at {store.engine.url.render_as_string(hide_password=True)} "
            "has no Nudge schema yet: run `nudge db upgrade`"
        )
    raise SchemaOutOfDateError(
        f"the database schema is at revision {current}, this Nudge needs {head}: "
        "run `nudge db upgrade`"
    )
