"""Reading an instant typed by a person (`--at`)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from engine.errors import NudgeError
from engine.localtime import NonexistentTimeError, wall_to_utc


def parse_instant(value: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 date or date-time; without an offset it is shop time, like ingest."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise NudgeError(
            f"--at: cannot read {value!r} as a time; use ISO 8601, "
            "e.g. 2026-11-11T20:00:00+08:00 or 2026-11-11T20:00"
        ) from None
    try:
        # In UTC: an aware time in the repeated autumn hour never compares equal to
        # the same instant in another zone (PEP 495), so `at` must not carry the zone.
        return wall_to_utc(parsed, zone)
    except NonexistentTimeError as exc:
        raise NudgeError(f"--at: {exc}") from None
