"""Loading data: ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import JsonFlag
from engine.presentation import progress
from engine.presentation.output import counts_text, echo, fail, plural, print_json, warn
from engine.presentation.stores import open_project_store

REJECTS_SHOWN = 20


def ingest(
    files: Annotated[
        list[str],
        typer.Argument(
            help="CSV or JSONL files of users, events or ad spend; - is stdin.", metavar="FILE..."
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            help="users, events or spend; default: detected (events have a type column, "
            "spend a cost column)."
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Write rejected rows here; default: <input>.rejects.jsonl."),
    ] = None,
    require_users: Annotated[
        bool, typer.Option("--require-users", help="Reject events of users not yet known.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Load users and events (CSV or JSONL, see docs/ingest.md); re-running stores nothing twice.

    Exit code 0: all rows stored; 2: some rows rejected (listed, and written to the
    rejects file); 1: an input could not be read at all, or the disk filled up (the
    rows stored until then stay stored: run the same command again).

    Example: nudge ingest users.csv events.jsonl
    """
    from engine.clock import utcnow
    from engine.ingest import ingest_files
    from engine.presentation.errors import is_disk_full

    store = open_project_store()
    done = [0]  # rows whose batch committed: what a failure leaves stored

    def advance(rows: int) -> None:
        done[0] += rows
        shown(rows)

    try:
        with progress.counter("ingest", detail=_input_size(files)) as shown:
            report = ingest_files(
                store,
                list(files),
                now=utcnow(),
                kind=kind,
                rejects_path=rejects,
                require_users=require_users,
                progress=advance,
            )
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise fail(
            f"the disk is full: ingest stopped with at least {plural(done[0], 'row')} stored "
            "(whole batches). Free space and run the same command again: rows already stored "
            "are skipped."
        ) from None
    for file in report.files:
        if file.rows_read == 0:
            warn(f"{file.file}: 0 rows (an empty file, or a header without rows)")
    if as_json:
        print_json(report.as_dict())
    else:
        for reject in report.rejected[:REJECTS_SHOWN]:
            echo(str(reject), err=True)
        if report.rejected_count > REJECTS_SHOWN:
            more = report.rejected_count - REJECTS_SHOWN
            echo(f"... and {plural(more, 'more rejected row')}", err=True)
        if report.rejects_paths:
            echo(f"rejected rows written to {', '.join(report.rejects_paths)}", err=True)
        echo(_ingest_summary(report))
        if report.coupons:
            echo(f"coupon codes in purchases: {counts_text(report.coupons)}")
    if report.has_rejects:
        raise typer.Exit(2)


def _ingest_summary(report) -> str:
    text = (
        f"{plural(report.rows_read, 'row')} read from {plural(len(report.files), 'file')}: "
        f"{plural(report.users_upserted, 'user')} upserted, "
        f"{plural(report.users_created, 'user')} created by events, "
        f"{plural(report.events_inserted, 'event')} stored, "
        f"{plural(report.duplicates_skipped, 'duplicate')} skipped, "
        f"{report.rejected_count} rejected"
    )
    if report.spend_upserted:
        text += f", {plural(report.spend_upserted, 'spend row')} stored"
    return text


def _input_size(files: list[str]) -> str:
    """` of 12.3 MB` for the progress line (stdin has no size)."""
    import os

    try:
        size = sum(os.path.getsize(f) for f in files if f != "-")
    except OSError:
        return ""
    if not size:
        return ""
    return f" from {size / 1_000_000:,.1f} MB"
