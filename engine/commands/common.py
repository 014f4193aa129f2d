"""What every command shares: option types, the `--at` parser, sub-command groups."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.config import load_settings
from engine.presentation.times import parse_instant_option

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]

AtOption = Annotated[
    str | None,
    typer.Option("--at", help="Evaluate at this instant (ISO 8601; default: now)."),
]
KpiAtOption = Annotated[
    str | None,
    typer.Option("--at", help="Instant T, ISO 8601 (shop time zone when no offset). Default: now."),
]
# `nudge report` and `audiences export-converters` measure the same period.
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Decisions from this instant (ISO 8601; shop time zone when no offset). "
        "Default: 30 days before --until.",
    ),
]
DeliveryAt = Annotated[
    str | None, typer.Option("--at", help="Act as of this instant (ISO 8601; default: now).")
]


def sub_app(help: str) -> typer.Typer:
    """A command group (`nudge db ...`) with the same plain help as the main app."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def shop_zone():
    return load_settings().tz


def parse_at(value: str | None, option: str = "--at", tz=None):
    """The one `--at` parser: ISO 8601, shop time when no offset; default: now."""
    from engine.clock import utcnow

    if value is None:
        return utcnow()
    return parse_instant_option(value, tz or shop_zone(), option)
