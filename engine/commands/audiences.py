"""Retargeting audiences: audiences sync/export/export-converters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.commands.common import JsonFlag, SinceOption, sub_app
from engine.presentation import progress
from engine.presentation.output import echo, fail, plural, print_json, warn
from engine.presentation.stores import open_project_store
from engine.presentation.times import local_time, parse_instant_option

audiences_app = sub_app("Retargeting audiences.")


def _print_audience_results(results, json_output: bool) -> None:
    if json_output:
        print_json(
            [
                {
                    "platform": r.platform,
                    "added": r.added,
                    "removed": r.removed,
                    "skipped_no_identifier": r.skipped_no_identifier,
                    "phones_left_out": dict(sorted(r.phones_left_out.items())),
                    "files": [str(f) for f in r.files],
                }
                for r in results
            ]
        )
        return
    for r in results:
        echo(
            f"{r.platform}: +{r.added} -{r.removed} "
            f"({r.skipped_no_identifier} without email or phone)"
        )
        _print_phones_left_out(r.phones_left_out)
        for path in r.files:
            echo(f"  wrote {path}")


def _print_phones_left_out(left_out) -> None:
    """By reason: "invalid" or "unparseable" (engine/phones.py)."""
    if left_out:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(left_out.items()))
        echo(f"  left out {plural(left_out.total(), 'phone number')}: {reasons}")


AudienceOut = Annotated[Path | None, typer.Option("--out", help="Folder for the files.")]


@audiences_app.command("sync")
def audiences_sync(
    name: Annotated[str, typer.Argument(help="Audience name.")],
    platform: Annotated[
        list[str] | None, typer.Option("--platform", help="google, meta or csv (repeatable).")
    ] = None,
    out: AudienceOut = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the adds and removes of an audience since its last sync, per platform.

    Platforms that no rule adding to the audience targets (`platforms: [meta]`) are
    skipped, with a warning.

    Example: nudge audiences sync lapsed-high-value --platform google --platform meta
    """
    from engine.audiences.platforms import audience_platforms, refusal
    from engine.audiences.sync import sync_audience
    from engine.clock import utcnow
    from engine.delivery.config import delivery_config

    store = open_project_store()
    config = delivery_config(store.settings)
    targeted = audience_platforms(store.settings, name)
    chosen = []
    for candidate in platform or config.audiences.platforms:
        reason = refusal(name, candidate, targeted)
        if reason is None:
            chosen.append(candidate)
        else:
            warn(f"skipped {candidate}: {reason}")
    if not chosen:
        raise fail(f"nothing to sync for audience {name!r}: every platform asked for was skipped")
    with progress.activity(f"syncing {name}"):
        results = sync_audience(
            store,
            name,
            platforms=tuple(chosen),
            out_dir=out or store.settings.project_dir / config.audiences.folder,
            now=utcnow(),
        )
    _print_audience_results(results, json_output)


@audiences_app.command("export")
def audiences_export(
    name: Annotated[str, typer.Argument(help="Audience name.")],
    format: Annotated[str, typer.Option("--format", help="google, meta or csv.")] = "csv",
    out: AudienceOut = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the whole consenting membership of an audience in a platform's format.

    Refuses a platform that no rule adding to the audience targets (a rule's
    `audience: {..., platforms: [meta]}` keeps it off Google).

    Example: nudge audiences export lapsed-high-value --format google --out exports/
    """
    from engine.audiences.platforms import audience_platforms, refusal
    from engine.audiences.sync import export_audience
    from engine.clock import utcnow
    from engine.delivery.config import delivery_config

    store = open_project_store()
    reason = refusal(name, format, audience_platforms(store.settings, name))
    if reason is not None:
        raise fail(reason)
    config = delivery_config(store.settings)
    folder = out or store.settings.project_dir / config.audiences.folder
    with progress.activity(f"exporting {name}"):
        result = export_audience(store, name, format, folder, now=utcnow())
    _print_audience_results([result], json_output)


@audiences_app.command("export-converters")
def audiences_export_converters(
    rule: Annotated[str, typer.Argument(help="Rule id (its file name without .yaml).")],
    format: Annotated[str, typer.Option("--format", help="google, meta or csv.")] = "csv",
    since: SinceOption = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Decisions before this instant; purchases at or before it (ISO 8601). "
            "Default: now.",
        ),
    ] = None,
    out: AudienceOut = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the users a rule converted (purchases attributed to its treated decisions,
    as in `nudge report`; never its control group) as a seed for lookalike audiences.

    Example: nudge audiences export-converters winback-lapsed-members --format google
    """
    from engine.delivery.config import delivery_config
    from engine.measurement.converters import export_converters

    store = open_project_store()
    tz = store.settings.tz
    config = delivery_config(store.settings)
    with progress.activity(f"exporting the converters of {rule}"):
        result = export_converters(
            store,
            rule,
            format,
            out or store.settings.project_dir / config.audiences.folder,
            since=parse_instant_option(since, tz, "--since"),
            until=parse_instant_option(until, tz, "--until"),
        )
    if json_output:
        print_json(result.as_dict())
        return
    period = f"{local_time(result.since, tz)} to {local_time(result.until, tz)}"
    echo(f"{result.rule}: {plural(result.converters, 'converted user')} (decisions from {period})")
    skipped = f"{result.skipped_no_identifier} without email or phone"
    if result.left_out:  # by consent refusal: no_consent, unsubscribed (engine/consent.py)
        reasons = ", ".join(f"{why} {n}" for why, n in sorted(result.left_out.items()))
        skipped += f"; left out {result.left_out.total()} without ads consent: {reasons}"
    echo(f"{result.platform}: +{result.exported} ({skipped})")
    _print_phones_left_out(result.phones_left_out)
    for path in result.files:
        echo(f"  wrote {path}")


# (end of delivery section)
