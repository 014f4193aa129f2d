"""Retry schedule: exponential backoff with deterministic "equal jitter".

The jitter spreads retries of a failed batch so a recovering endpoint is not hit
by all of them at once; it is derived from the idempotency key and the attempt
number instead of a random generator, so the schedule is reproducible (and tests
can assert exact times).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta


def jitter_fraction(key: str, attempt: int) -> float:
    """A number in [0, 1) that depends only on (key, attempt)."""
    digest = hashlib.sha256(f"{key}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def retry_delay(key: str, attempt: int, *, base: timedelta, max_delay: timedelta) -> timedelta:
    """Delay before retrying after failed attempt number `attempt` (1-based).

    Half of the exponential step is fixed and half is jitter, so a retry never comes
    sooner than half the step: base * 2**(attempt-1) capped at max_delay.
    """
    step = min(max_delay, base * 2 ** max(attempt - 1, 0))
    delay = step / 2 + step / 2 * jitter_fraction(key, attempt)
    return timedelta(seconds=round(delay.total_seconds()))
