"""Instants for people: the shop's time zone, to the second; and the one `--at` parser.

Engine values are aware UTC datetimes. People read the shop's wall clock, and
microseconds are noise on a screen, so every command shows instants through
`local_time`. `--json` keeps full ISO 8601 for machines.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from engine.errors import NudgeError
from engine.localtime import shop_time_text

local_time = shop_time_text  # `2026-11-11 20:00:00+08:00`; "" for None


def cell(value: object, tz: ZoneInfo) -> str:
    """Any engine value as a table cell: instants local, mappings as JSON."""
    if isinstance(value, datetime):
        return local_time(value, tz)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else str(value)


def parse_instant_option(value: str | None, tz: ZoneInfo, option: str = "--at") -> datetime | None:
    """`--at`, `--since`, `--until`: ISO 8601, shop time when no offset; None stays None.

    Errors name the option the person typed.
    """
    from engine.planning.timeparse import parse_instant

    if value is None:
        return None
    try:
        return parse_instant(value, tz)
    except NudgeError as exc:
        raise NudgeError(str(exc).replace("--at", option, 1)) from None
