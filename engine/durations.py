"""Durations as marketers write them: "14d", "12h", "30m", "2w", "45s", or "1d12h".

One parser for rules (`expires_in`, `every`, `wait`), nudge.toml (`caps.per`) and the
delivery policy, so that "7d" means the same everywhere.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1)}
UNITS |= {"m": timedelta(minutes=1), "s": timedelta(seconds=1)}

# Units in decreasing size, each at most once: "1d12h" yes, "12h1d" or "1d1d" no.
_PATTERN = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ORDER = ("w", "d", "h", "m", "s")


def parse_duration(text: str) -> timedelta:
    """'14d' -> timedelta(days=14). Raises ValueError naming the accepted forms.

    Months and years are deliberately absent: they have no fixed length, and "30d"
    says exactly what a cap or an expiry means.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be text like '14d', not {text!r}")
    cleaned = text.strip().lower()
    match = _PATTERN.match(cleaned) if cleaned else None
    if match is None or not any(match.groups()):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit w, d, h, m or s "
            "(for example '14d', '12h', '30m', '2w' or '1d12h')"
        )
    total = timedelta()
    for unit, amount in zip(_ORDER, match.groups(), strict=True):
        if amount is not None:
            total += int(amount) * UNITS[unit]
    if total <= timedelta():
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return total


def format_duration(value: timedelta) -> str:
    """The shortest text that parse_duration reads back as `value` (whole seconds)."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        size = int(UNITS[unit].total_seconds())
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
