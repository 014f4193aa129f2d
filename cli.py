"""The `nudge` command: parse arguments, call one engine function, print.

Expected errors (engine.errors.NudgeError) print as `Error: ...` with exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from engine.config import load_settings
from engine.errors import NudgeError


class NudgeGroup(TyperGroup):
    """Turns expected engine errors into `Error: ...` + exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NudgeError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=NudgeGroup,
    help="Nudge: rule-driven marketing automation for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain output: stable for scripts, pipes and tests.
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain aligned table: readable in a terminal, stable in tests and pipes."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        typer.echo("  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            typer.echo("  ".join("-" * w for w in widths))


def _width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def open_project_store():
    from engine.store import open_store

    return open_store(load_settings())


# ---------------- project & database


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new project.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Shop name.")] = None,
) -> None:
    """Scaffold a project: nudge.toml, rules/, templates/, and an up-to-date database.

    Example: nudge init my-shop
    """
    from engine.project import scaffold
    from engine.store import open_store
    from engine.store.migrations import upgrade

    try:
        created = scaffold(directory, name=name)
    except FileExistsError as exc:
        raise fail(f"{exc} already exists; this folder is already a Nudge project") from None
    store = open_store(load_settings(directory), check_schema=False)
    upgrade(store)
    store.dispose()
    for path in created:
        typer.echo(f"created {path}")
    typer.echo(f"database ready: {store.settings.database_url}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of Nudge.

    Example: nudge db upgrade
    """
    from engine.store import open_store
    from engine.store.migrations import upgrade

    store = open_store(load_settings(), check_schema=False)
    before, after = upgrade(store)
    store.dispose()
    if before == after:
        typer.echo(f"schema already at revision {after}")
    else:
        typer.echo(f"schema upgraded from {before or 'empty'} to {after}")


# ---------------- ingest
# (end of ingest section)

# ---------------- lifecycle, stats, users, demo
# (end of lifecycle section)

# ---------------- rules: check, test, dry-run, explain, fire
# (end of rules section)

# ---------------- creatives: preview, landing
# (end of creatives section)

# ---------------- delivery: dispatch, status, coupons, audiences
# (end of delivery section)


if __name__ == "__main__":
    app()
