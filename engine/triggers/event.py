"""`event: purchase` — fires for each new matching event.

"New" is the events at or before T and within a lookback window before T: a daemon
ticking every minute sees every event, a restarted one catches up on the window, and
an event older than the window is not acted on (a thank-you a week late helps
nobody). The event id is the occurrence key, so overlapping windows plan once.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from engine.store.people import Event
from engine.triggers.base import TriggerContext, TriggerSpec, instant_slot, key_text

events = Event.__table__
name = "event"
LOOKBACK = timedelta(days=1)


def occurrences(spec: TriggerSpec, ctx: TriggerContext) -> sa.Select:
    e = events
    return sa.select(
        e.c.user_id,
        key_text("event", e.c.id).label("occurrence_key"),
        e.c.occurred_at.label("occurred_at"),
        e.c.occurred_at.label("trigger_at"),
        e.c.id.label("event_id"),
        (sa.literal("event:", sa.String) + e.c.source_id).label("occurrence_ref"),
    ).where(
        e.c.type == spec.value,
        e.c.occurred_at <= ctx.at,
        e.c.occurred_at > ctx.at - LOOKBACK,
        # A steady tick reads the events ingested since the previous one (an index on
        # type and ingested_at), not its whole day of look-back.
        *([e.c.ingested_at > ctx.changed_since] if ctx.changed_since is not None else []),
    )


def slot(spec: TriggerSpec, ctx: TriggerContext) -> str:
    return instant_slot(ctx.at)
