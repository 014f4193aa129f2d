"""The `nudge` command: the Typer app and its commands, in the order help lists them.

The commands live in engine/commands/, one module per area: they parse arguments, call
one engine function and print. How things are shown (tables, times, `--json`, plurals,
progress, one-line errors, store lifetime) lives in engine/presentation/, so a new
command looks like the others by using it. Expected errors (engine.errors.NudgeError, an
unreachable database, a full disk) print as one `Error: ...` line with exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from engine.commands import (
    audiences,
    coupons,
    creatives,
    delivery,
    demo,
    ingest,
    project,
    report,
    rule_files,
    rules,
    users,
)
from engine.errors import NudgeError
from engine.presentation import progress
from engine.presentation.errors import expected_failure, redact_text
from engine.presentation.output import echo, fail
from engine.presentation.stores import close_opened_stores, configured_database_url


class NudgeGroup(TyperGroup):
    """Turns expected failures into one `Error: ...` line + exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # the command chose its exit (and printed its message)
        except NudgeError as exc:
            raise fail(redact_text(str(exc), configured_database_url())) from None
        except Exception as exc:
            message = expected_failure(exc, configured_database_url())
            if message is None:
                raise  # a bug: keep the traceback
            raise fail(message) from None
        finally:
            # Close every database a command opened, whatever way it ended.
            close_opened_stores()


app = typer.Typer(
    cls=NudgeGroup,
    help="Nudge: rule-driven marketing automation for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: stable for scripts, pipes and tests.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            echo(f"nudge {version('nudge')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            echo("nudge (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars (they go to stderr).")
    ] = False,
) -> None:
    """Nudge: rule-driven marketing automation for e-commerce."""
    progress.set_quiet(quiet)


COMMANDS = [
    ("init", project.init),
    ("ingest", ingest.ingest),
    ("stats", users.stats),
    ("demo", demo.demo),
    ("schema", project.schema),
    ("check", rules.check),
    ("test", rules.test_rules),
    ("dry-run", rules.dry_run),
    ("fire", rules.fire),
    ("explain", rules.explain),
    ("run", delivery.run_daemon_command),
    ("preview", creatives.preview),
    ("dispatch", delivery.dispatch),
    ("report", report.report),
    ("status", delivery.status),
    ("retry", delivery.retry),
    ("unsubscribe", delivery.unsubscribe),
    ("serve", delivery.serve),
    ("fmt", rule_files.fmt),
    ("journeys", rule_files.journeys),
]
GROUPS = [
    ("db", project.db_app),
    ("users", users.users_app),
    ("landing", creatives.landing_app),
    ("coupons", coupons.coupons_app),
    ("audiences", audiences.audiences_app),
]
for name, command in COMMANDS:
    app.command(name)(command)
for name, group in GROUPS:
    app.add_typer(group, name=name)

if __name__ == "__main__":
    app()
