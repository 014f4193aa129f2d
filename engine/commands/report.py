"""Measurement: report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import JsonFlag, SinceOption
from engine.presentation import progress
from engine.presentation.output import echo, print_json
from engine.presentation.stores import open_project_store
from engine.presentation.times import parse_instant_option


def report(
    since: SinceOption = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Decisions before this instant; purchases, refunds and sends at or before "
            "it (ISO 8601). Default: now.",
        ),
    ] = None,
    rule: Annotated[
        list[str] | None, typer.Option("--rule", "-r", help="Only this rule (repeatable).")
    ] = None,
    json_output: JsonFlag = False,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            dir_okay=False,
            help="Write the report, with the shop KPIs and cohorts of the period, as one "
            "self-contained HTML file (charts inline, no network needed to view it).",
        ),
    ] = None,
) -> None:
    """Per rule and variant: audience, delivered, conversions, revenue, coupon and send
    costs, lift against the holdout with a verdict, incremental revenue and ROI.

    Example: nudge report --since 2026-11-01 --rule winback-lapsed-members --html report.html
    """
    from engine.measurement.report import build_report, render_report

    store = open_project_store()
    tz = store.settings.tz
    with progress.activity("measuring"):
        result = build_report(
            store,
            since=parse_instant_option(since, tz, "--since"),
            until=parse_instant_option(until, tz, "--until"),
            rule_ids=rule,
        )
        if html_file is not None:
            from engine.measurement.html import write_html_report

            write_html_report(store, result, html_file)
    if json_output:
        print_json(result.as_dict(tz))
    elif html_file is not None:
        echo(f"HTML report written to {html_file}")
    else:
        echo(render_report(result, tz))
