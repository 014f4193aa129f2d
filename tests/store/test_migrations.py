"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from cli import app
from engine.config import load_settings
from engine.store import open_store
from engine.store.migrations import head_revision
from engine.store.tables import metadata


def test_migrations_match_models(store):
    with store.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_commands_refuse_a_database_without_schema(tmp_path, monkeypatch):
    (tmp_path / "nudge.toml").write_text("[shop]\nname = 'x'\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tmp_path, environ={})
    try:
        open_store(settings)
    except Exception as exc:
        message = str(exc)
    else:
        raise AssertionError("an empty database was accepted")
    assert message == (
        f"the database at sqlite:///{tmp_path / 'nudge.db'} has no Nudge schema yet: "
        "run `nudge db upgrade`"
    )
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output == f"schema upgraded from empty to {head_revision()}\n"
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.output == f"schema already at revision {head_revision()}\n"
