"""Project and database: init, db upgrade/distribute, schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import sub_app
from engine.config import load_settings
from engine.presentation.errors import redact_url
from engine.presentation.output import echo, fail
from engine.presentation.stores import open_project_store

db_app = sub_app("Database schema.")


def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new project.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Shop name.")] = None,
) -> None:
    """Scaffold a project: nudge.toml, rules/, templates/, and an up-to-date database.

    Example: nudge init my-shop
    """
    from engine.project import scaffold
    from engine.store.migrations import upgrade

    try:
        created = scaffold(directory, name=name)
    except FileExistsError as exc:
        raise fail(f"{exc} already exists; this folder is already a Nudge project") from None
    store = open_project_store(load_settings(directory), check_schema=False)
    upgrade(store)
    for path in created:
        echo(f"created {path}")
    echo(f"database ready: {redact_url(store.settings.database_url)}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of Nudge.

    Example: nudge db upgrade
    """
    from engine.store.migrations import upgrade

    before, after = upgrade(open_project_store(check_schema=False))
    if before == after:
        echo(f"schema already at revision {after}")
    else:
        echo(f"schema upgraded from {before or 'empty'} to {after}")


@db_app.command("distribute")
def db_distribute() -> None:
    """Distribute the store over a Citus cluster by user (docs/scaling.md); idempotent.

    Example: nudge db distribute
    """
    from engine.store.distribute import distribute

    result = distribute(open_project_store(check_schema=False))
    for table, placement in result.placed:
        echo(f"{table}: {placement}")
    echo(f"{len(result.placed)} tables placed, {len(result.already)} already in place")


def schema(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of printing.")
    ] = None,
) -> None:
    """Print the JSON Schema of rule files (editors use it to autocomplete and underline).

    Example: nudge schema --out rule.schema.json
    """
    from engine.rules.schema import schema_text

    text = schema_text()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        echo(f"wrote {out}")
