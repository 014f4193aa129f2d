"""What `nudge status` shows and what `nudge retry` does: the outbox seen by a person.

Every planned action is in exactly one state, so the counts always add up to the
number of planned actions (DESIGN invariant 2: nothing vanishes). Besides the counts
it lists the actions that need a person's eye: those being retried (with their next
attempt and last error) and the dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.errors import NotFoundError, NudgeError
from engine.store import Store
from engine.store.planning import OutboxAction

outbox = OutboxAction.__table__
STATES = ("planned", "claimed", "sent", "skipped", "dead")


# Planned again after a failure: retried with backoff (reason `retrying`), deferred
# after a failed attempt, or a dead letter requeued by `nudge retry`. The state
# matters: a row that ended sent keeps its last_error column, and must not show it.
RETRYING = sa.and_(
    outbox.c.state == "planned",
    sa.or_(outbox.c.attempts > 0, outbox.c.last_error.is_not(None)),
)


@dataclass
class DeliveryStatus:
    counts: dict[str, int]
    oldest_pending_at: datetime | None
    skipped_reasons: dict[str, int]
    dead: list[dict[str, Any]] = field(default_factory=list)
    retrying: list[dict[str, Any]] = field(default_factory=list)
    # How many rows each list would hold uncut (a `limit` may have cut the lists).
    retrying_total: int = 0
    dead_total: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "oldest_pending_at": self.oldest_pending_at,
            "skipped_reasons": self.skipped_reasons,
            "retrying": self.retrying,
            "retrying_total": self.retrying_total,
            "dead": self.dead,
            "dead_total": self.dead_total,
        }


def delivery_status(store: Store, *, limit: int | None = None) -> DeliveryStatus:
    """Counts per state, the oldest pending action, skip reasons, and the actions being
    retried (soonest next attempt first) and dead (latest first): all of them, or the
    first `limit` of each list with their totals."""
    with store.read() as connection:
        counts = dict.fromkeys(STATES, 0)
        counts.update(
            connection.execute(
                sa.select(outbox.c.state, sa.func.count()).group_by(outbox.c.state)
            ).all()
        )
        oldest = connection.execute(
            sa.select(sa.func.min(outbox.c.created_at)).where(
                outbox.c.state.in_(("planned", "claimed"))
            )
        ).scalar()
        reasons = dict(
            connection.execute(
                sa.select(outbox.c.reason, sa.func.count())
                .where(outbox.c.state == "skipped")
                .group_by(outbox.c.reason)
                .order_by(outbox.c.reason)
            ).all()
        )
        retrying = _rows(
            connection,
            RETRYING,
            [outbox.c.next_attempt_at, outbox.c.id],
            limit,
            extra=[outbox.c.next_attempt_at],
        )
        retrying_total = connection.execute(
            sa.select(sa.func.count()).select_from(outbox).where(RETRYING)
        ).scalar_one()
        dead = _rows(
            connection,
            outbox.c.state == "dead",
            [outbox.c.updated_at.desc(), outbox.c.id.desc()],
            limit,
        )
    return DeliveryStatus(
        counts,
        oldest,
        reasons,
        dead=dead,
        retrying=retrying,
        retrying_total=retrying_total,
        dead_total=counts["dead"],
    )


def _rows(connection, condition, order_by, limit: int | None, extra=()) -> list[dict[str, Any]]:
    """One listed row per action: who, what, how many attempts and what went wrong."""
    query = (
        sa.select(
            outbox.c.id,
            outbox.c.rule_id,
            outbox.c.user_id,
            outbox.c.kind,
            outbox.c.attempts,
            *extra,
            outbox.c.reason,
            outbox.c.last_error,
            outbox.c.updated_at,
        )
        .where(condition)
        .order_by(*order_by)
        .limit(limit)
    )
    return [dict(row._mapping) for row in connection.execute(query)]


def retry_dead(store: Store, *, now: datetime, ids: list[int] | None = None) -> int:
    """Requeue dead letters (all, or the given ids) as planned, due now, attempts reset.

    The idempotency key is unchanged, so a sink that already received the action
    before it was declared dead still drops the duplicate. The last error is kept and
    the reason says `requeued`, so `nudge status` lists the row with why it had died
    until it is delivered.
    """
    condition = outbox.c.state == "dead"
    if ids is not None:
        with store.connect() as connection:
            found = {
                row.id: row.state
                for row in connection.execute(
                    sa.select(outbox.c.id, outbox.c.state).where(outbox.c.id.in_(ids))
                )
            }
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"no outbox action with id {', '.join(missing)}")
        not_dead = [f"{i} ({found[i]})" for i in ids if found[i] != "dead"]
        if not_dead:
            listed = ", ".join(not_dead)
            raise NudgeError(f"only dead actions can be retried; not dead: {listed}")
        condition = sa.and_(condition, outbox.c.id.in_(ids))
    with store.begin() as connection:
        result = connection.execute(
            sa.update(outbox)
            .where(condition)
            .values(
                state="planned",
                attempts=0,
                next_attempt_at=now,
                reason="requeued",
                lease_until=None,
                updated_at=now,
            )
        )
    return result.rowcount
