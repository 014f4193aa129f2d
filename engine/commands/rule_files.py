"""Rule files as text: fmt, journeys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import JsonFlag
from engine.config import load_settings
from engine.presentation.output import echo, print_json


def fmt(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Rule files, rule test files or folders (default: the rules folder and "
            "its tests/)."
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Change nothing; exit 1 listing the files that would change (CI)."
        ),
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Format rule files and rule test files: one indentation style, comments, key order
    and quotes kept. A file that does not parse is reported and left alone.

    Exit 1 on a file that cannot be formatted, and with --check on any file that would change.

    Example: nudge fmt --check
    """
    from engine.rules.formatting import format_paths

    report = format_paths(paths or [load_settings().rules_dir], check=check)
    if json_output:
        print_json(report.as_dict())
    else:
        for diagnostic in report.diagnostics:
            echo(diagnostic.render(relative_to=Path.cwd()))
        for path in report.changed:
            shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
            echo(f"{'would reformat' if check else 'reformatted'} {shown}")
        echo(report.summary(check=check))
    raise typer.Exit(1 if report.diagnostics or (check and report.changed) else 0)


def journeys(
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            dir_okay=False,
            help="Also write the map as one self-contained HTML page (no network needed).",
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Show the rules linked by `after:` triggers (multi-step journeys) as trees, with
    each rule's status, trigger, wait and `unless` stop, its exclusive group, and any
    loop of follow-ups.

    Example: nudge journeys --html journeys.html
    """
    from engine.journeys import load_journeys, render_text, write_html

    settings = load_settings()
    journey_map = load_journeys(settings.rules_dir)
    if html_file is not None:
        write_html(journey_map, html_file, title=f"{settings.shop.name}: journeys")
    if json_output:
        print_json(journey_map.as_dict())
        return
    typer.echo(render_text(journey_map), nl=False)
    if html_file is not None:
        echo(f"HTML written to {html_file}")
