"""Claiming due outbox rows and recording what became of them.

A claim is one UPDATE ... RETURNING over the ids of due rows. On PostgreSQL the ids
come from `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent dispatchers take
disjoint rows without waiting for each other; on SQLite the engine's BEGIN IMMEDIATE
makes the claim a single writer. A claim carries a lease: rows whose lease expired
(their dispatcher crashed or hung) are due again and are taken over.

`attempts` is counted when a row is claimed, not when it fails, so an action that
crashes its dispatcher every time still reaches max_attempts and goes dead instead
of looping forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.delivery.context import Outcome, PlannedAction
from engine.store.delivery import DeliveryAttempt
from engine.store.planning import OutboxAction

outbox = OutboxAction.__table__
attempts_table = DeliveryAttempt.__table__

_COLUMNS = (
    "id",
    "idempotency_key",
    "decision_id",
    "run_id",
    "rule_id",
    "user_id",
    "kind",
    "channel",
    "variant",
    "priority",
    "payload",
    "attempts",
    "created_at",
)


def due_condition(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(outbox.c.state == "planned", outbox.c.next_attempt_at <= now),
        sa.and_(outbox.c.state == "claimed", outbox.c.lease_until < now),
    )


def claim_batch(
    connection: Connection, *, now: datetime, worker_id: str, lease_until: datetime, limit: int
) -> list[PlannedAction]:
    """Claim up to `limit` due actions, highest priority first, for `worker_id`."""
    ids = (
        sa.select(outbox.c.id)
        .where(due_condition(now))
        .order_by(outbox.c.priority.desc(), outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        sa.update(outbox)
        .where(outbox.c.id.in_(ids.scalar_subquery()))
        .values(
            state="claimed",
            claimed_by=worker_id,
            lease_until=lease_until,
            attempts=outbox.c.attempts + 1,
            updated_at=now,
        )
        .returning(*(outbox.c[name] for name in _COLUMNS))
    )
    rows = connection.execute(statement).all()
    actions = [PlannedAction(**row._mapping) for row in rows]
    # RETURNING order is unspecified; policies need priority order.
    actions.sort(key=lambda a: (-a.priority, a.id))
    return actions


def record_outcomes(
    connection: Connection,
    decided: Sequence[tuple[PlannedAction, Outcome]],
    *,
    now: datetime,
    worker_id: str,
) -> None:
    """Write each action's outcome.

    Outcomes that are the same for many rows (sent; skipped for one reason) are one
    UPDATE ... WHERE id IN (...); the rest (retries and deferrals, each with its own
    time) go in one executemany. The `claimed_by` guard keeps a dispatcher whose lease
    expired from overwriting the outcome recorded by the one that took its rows over.
    Every outcome but `sent` is also appended to delivery_attempts (a sent row's own
    sent_at, attempts and claimed_by already tell its story).
    """
    if not decided:
        return
    ours = sa.and_(outbox.c.state == "claimed", outbox.c.claimed_by == worker_id)
    groups: dict[tuple, list[int]] = {}
    individual = []
    history = []
    for action, outcome in decided:
        if outcome.state in ("sent", "skipped", "dead") and outcome.until is None:
            groups.setdefault((outcome.state, outcome.reason, outcome.error), []).append(action.id)
        else:
            individual.append(
                {
                    "b_id": action.id,
                    "b_reason": outcome.reason,
                    "b_error": outcome.error,
                    "b_next": outcome.until,
                    # A deferral is not a failed attempt: give the claim's count back.
                    "b_undo": 1 if outcome.state == "deferred" else 0,
                }
            )
        if outcome.state != "sent":
            history.append(
                {
                    "outbox_id": action.id,
                    "user_id": action.user_id,
                    "attempt": action.attempts,
                    "worker": worker_id,
                    "outcome": outcome.state,
                    "reason": outcome.reason,
                    "error": outcome.error,
                    "at": now,
                }
            )
    for (state, reason, error), ids in groups.items():
        values = {"state": state, "reason": reason, "lease_until": None, "updated_at": now}
        if state == "sent":
            values["sent_at"] = now
        else:
            values["last_error"] = error
        connection.execute(sa.update(outbox).where(outbox.c.id.in_(ids), ours).values(values))
    if individual:
        statement = (
            sa.update(outbox)
            .where(outbox.c.id == sa.bindparam("b_id"), ours)
            .values(
                state="planned",
                reason=sa.bindparam("b_reason"),
                last_error=sa.bindparam("b_error"),
                next_attempt_at=sa.bindparam("b_next", type_=outbox.c.next_attempt_at.type),
                attempts=outbox.c.attempts - sa.bindparam("b_undo"),
                lease_until=None,
                updated_at=now,
            )
        )
        connection.execute(statement, individual)
    if history:
        connection.execute(sa.insert(attempts_table), history)
