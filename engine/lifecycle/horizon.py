"""The horizon: lets a daemon's steady tick skip a stage refresh that would provably
record nothing, with a few cheap reads.

After a steady refresh at `as_of`, the next instant any stored date crosses a
threshold (engine/lifecycle/crossings.py `next_crossing`). Until then a user's stage
can only change through their data, which flags them stage_dirty. In a large shop
some date crosses nearly every minute and the refresh runs anyway; it then costs what
the users who crossed cost (crossings.py `candidates`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.clock import ensure_aware
from engine.config import LifecycleSettings, Settings
from engine.lifecycle.crossings import next_crossing
from engine.lifecycle.dirty import any_flagged
from engine.lifecycle.marks import read_mark, settings_hash
from engine.store.profiles import is_current


@dataclass(frozen=True)
class _Horizon:
    """After the refresh at `as_of`: the earliest later instant at which a stored date
    crosses a threshold (None: none ever will)."""

    as_of: datetime
    settings_hash: str
    next_crossing: datetime | None


# Per database, in this process: kept in memory, not in the store, so that nothing but
# this process's own latest steady refresh can vouch for it. Any other refresh (another
# daemon's, a `nudge run --once`) moves the mark past `as_of` and voids it.
_HORIZONS: weakref.WeakKeyDictionary[sa.Engine, _Horizon] = weakref.WeakKeyDictionary()


def forget_horizon(engine: sa.Engine) -> None:
    """A refresh is under way: it may change what the horizon described."""
    _HORIZONS.pop(engine, None)


def remember_horizon(
    connection: Connection, lifecycle: LifecycleSettings, now: datetime, fingerprint: str
) -> None:
    """After a steady refresh at `now`: when the next date crosses a threshold. Only
    when the maintained profiles describe `now` (they are what the crossing reads)."""
    if not is_current(connection, now):
        return
    _HORIZONS[connection.engine] = _Horizon(
        as_of=now,
        settings_hash=fingerprint,
        next_crossing=next_crossing(connection, lifecycle, now),
    )


def stages_unchanged(connection: Connection, settings: Settings, now: datetime) -> bool:
    """Whether a refresh at `now` would provably record nothing (a few cheap reads):
    this process's latest steady refresh is still the last one, no user is flagged
    stage_dirty, and no date crosses a threshold between that refresh and `now`."""
    now = ensure_aware(now)
    fingerprint = settings_hash(settings.lifecycle)
    horizon = _HORIZONS.get(connection.engine)
    if horizon is None or horizon.settings_hash != fingerprint:
        return False
    if horizon.next_crossing is not None and horizon.next_crossing <= now:
        return False
    mark = read_mark(connection)
    if mark is None or mark.as_of != horizon.as_of or mark.settings_hash != fingerprint:
        return False
    # The maintained profiles must describe `now` (an event dated after the horizon's
    # refresh would make a user's profile as of now move without a flag).
    if not is_current(connection, now):
        return False
    return not any_flagged(connection)
