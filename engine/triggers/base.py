"""What every trigger kind provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.config import Settings

# Columns every occurrence query selects, in this order:
# - occurred_at: when the occurrence happened (the event's time, the stage's natural
#   entry instant, the schedule slot, the instant a follow-up fell due);
# - trigger_at: where its chain started: occurred_at itself, or for a follow-up the
#   original occurrence it follows (`since="trigger"` windows start there);
# - event_id: the triggering event of an event rule, else NULL;
# - occurrence_ref: the occurrence's natural identity as text (no row numbers): the
#   event's source id, the stage and its entry instant, the slot, the followed
#   decision. Idempotency keys derive from it (DESIGN invariant 9).
OCCURRENCE_COLUMNS = (
    "user_id",
    "occurrence_key",
    "occurred_at",
    "trigger_at",
    "event_id",
    "occurrence_ref",
)


@dataclass(frozen=True)
class TriggerSpec:
    """A rule's trigger, reduced to what evaluation needs."""

    kind: str  # stage | event | schedule | after
    value: str  # the stage, event type, cron expression or followed rule id
    wait: timedelta | None = None  # `after` only


@dataclass(frozen=True)
class TriggerContext:
    connection: Connection
    settings: Settings
    at: datetime  # T, aware
    # T of this rule's previous completed evaluation with the same content, if any:
    # what was recorded before it has been considered already.
    watermark: datetime | None = None
    rule_id: str | None = None
    # Event and after triggers: only what changed after this instant (events ingested,
    # decisions made or falling due); None reads their whole look-back window. The
    # daemon passes its previous evaluation's time less a safety lag, and sweeps the
    # whole window now and then (engine/daemon.py).
    changed_since: datetime | None = None
    # Per-evaluation scratch space of a trigger kind (e.g. the schedule's slot plan).
    memo: dict = field(default_factory=dict, compare=False)


class TriggerKind(Protocol):
    name: str

    def occurrences(self, spec: TriggerSpec, ctx: TriggerContext) -> sa.Select | None:
        """The occurrences due at T, or None when nothing is due (e.g. no schedule slot)."""
        ...

    def slot(self, spec: TriggerSpec, ctx: TriggerContext) -> str:
        """The run slot claimed at T: two daemons evaluating the same slot plan once."""
        ...


def key_text(prefix: str, column: sa.ColumnElement) -> sa.ColumnElement[str]:
    """'prefix:<id>' built in SQL, identical on SQLite and PostgreSQL."""
    return sa.literal(f"{prefix}:", sa.String) + sa.cast(column, sa.String)


def instant_slot(at: datetime) -> str:
    """Slot of an evaluation at T for triggers that are not scheduled: T to the
    microsecond, so two wake-ups within one second both evaluate (decisions are unique
    per occurrence anyway; the slot only stops two daemons running the same instant)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def no_event() -> sa.ColumnElement:
    """The event_id of an occurrence that is not an event (typed: PostgreSQL refuses an
    untyped NULL in a BIGINT column)."""
    return sa.cast(sa.null(), sa.BigInteger).label("event_id")
