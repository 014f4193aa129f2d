"""The only module that reads the wall clock.

Everything else takes `now` as an argument so that a rule can be run, dry-run or
tested at any instant T (DESIGN: "time is an argument").
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current instant, time-zone aware, in UTC."""
    return datetime.now(UTC)


def monotonic() -> float:
    """Seconds from an arbitrary origin, for measuring durations only."""
    return time.monotonic()


def ensure_aware(value: datetime) -> datetime:
    """Reject naive datetimes at API boundaries: a naive instant is ambiguous."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone")
    return value
