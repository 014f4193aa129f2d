"""What `nudge status` shows and what `nudge retry` does: the outbox seen by a person.

Every planned action is in exactly one state, so the counts always add up to the
number of planned actions (DESIGN invariant 2: nothing vanishes).
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


@dataclass
class DeliveryStatus:
    counts: dict[str, int]
    oldest_pending_at: datetime | None
    skipped_reasons: dict[str, int]
    dead: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "oldest_pending_at": self.oldest_pending_at,
            "skipped_reasons": self.skipped_reasons,
            "dead": self.dead,
        }


def delivery_status(store: Store, *, dead_limit: int = 50) -> DeliveryStatus:
    """Counts per state, the oldest pending action, skip reasons and the dead letters."""
    with store.connect() as connection:
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
        dead = [
            dict(row._mapping)
            for row in connection.execute(
                sa.select(
                    outbox.c.id,
                    outbox.c.rule_id,
                    outbox.c.user_id,
                    outbox.c.kind,
                    outbox.c.attempts,
                    outbox.c.reason,
                    outbox.c.last_error,
                    outbox.c.updated_at,
                )
                .where(outbox.c.state == "dead")
                .order_by(outbox.c.updated_at.desc(), outbox.c.id.desc())
                .limit(dead_limit)
            )
        ]
    return DeliveryStatus(counts, oldest, reasons, dead)


def retry_dead(store: Store, *, now: datetime, ids: list[int] | None = None) -> int:
    """Requeue dead letters (all, or the given ids) as planned, due now, attempts reset.

    The idempotency key is unchanged, so a sink that already received the action
    before it was declared dead still drops the duplicate.
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
                reason=None,
                lease_until=None,
                updated_at=now,
            )
        )
    return result.rowcount
