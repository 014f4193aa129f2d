"""Claiming due outbox rows, holding them while they are sent, recording what became of them.

A claim is one UPDATE ... RETURNING over the ids of due rows. On PostgreSQL the ids
come from `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent dispatchers take
disjoint rows without waiting for each other; on SQLite the engine's BEGIN IMMEDIATE
makes the claim a single writer. A claim carries a lease: rows whose lease expired
(their dispatcher crashed or hung) are due again and are taken over.

Each claim has its own holder, `claimed_by = "<worker>#<claim id>"` (`new_holder`), so
two claims are told apart even when they come from the same worker id (two threads of
one process, or a restarted container that got the same host name and pid). While a
batch is being sent its lease is renewed (`Lease`), and every write after the claim —
renewal, record, release — is fenced by `held_by(holder)`: it only touches rows still
`claimed` by that very claim. A dispatcher whose lease ran out and whose rows were
taken over can therefore neither send them again (the renewal before a send tells it
they are gone) nor record over the result of the one that took them.

`attempts` is counted when a row is claimed, not when it fails, so an action that
crashes its dispatcher every time still reaches max_attempts and goes dead instead
of looping forever. A row released unsent (a dispatcher stopping) gets its count back.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection

from engine.delivery.context import Outcome, PlannedAction
from engine.store.delivery import DeliveryAttempt
from engine.store.planning import OutboxAction
from engine.store.sql import among

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


# The payload comes back as its JSON text, not through the column's JSON type: the
# planner writes one payload per rule action, so a batch holds a handful of distinct
# texts, each parsed once (planned_actions) instead of once per row.
_RETURNED = tuple(
    sa.cast(outbox.c[name], sa.Text) if name == "payload" else outbox.c[name] for name in _COLUMNS
)
_PAYLOAD = _COLUMNS.index("payload")
# Rows become PlannedActions by position (far cheaper than by name, per row).
assert _COLUMNS == PlannedAction._fields


def planned_actions(rows: Sequence[Sequence]) -> list[PlannedAction]:
    """Claimed rows (columns in `_COLUMNS` order, payload as JSON text) as PlannedActions.

    Rows with the same payload text share one parsed dict, which delivery only reads
    (PlannedAction is frozen; nothing in delivery writes into a payload).
    """
    parsed: dict[str, dict] = {}
    actions = []
    for row in rows:
        values = list(row)
        text = values[_PAYLOAD]
        payload = parsed.get(text)
        if payload is None:
            payload = parsed[text] = json.loads(text)
        values[_PAYLOAD] = payload
        actions.append(PlannedAction(*values))
    return actions


HOLDER_LENGTH = 64  # outbox.claimed_by
CLAIM_ID_HEX = 8


def new_holder(worker_id: str) -> str:
    """`<worker>#<claim id>`: readable (who) and unique per claim (which claim)."""
    claim_id = secrets.token_hex(CLAIM_ID_HEX // 2)
    return f"{worker_id[: HOLDER_LENGTH - CLAIM_ID_HEX - 1]}#{claim_id}"


def worker_of(claimed_by: str) -> str:
    """The worker part of a holder written by new_holder."""
    return claimed_by.rsplit("#", 1)[0]


def held_by(holder: str) -> sa.ColumnElement[bool]:
    """Rows still claimed by this claim: the fence of every write after the claim."""
    return sa.and_(outbox.c.state == "claimed", outbox.c.claimed_by == holder)


def claim_batch(
    connection: Connection, *, now: datetime, worker_id: str, lease_until: datetime, limit: int
) -> list[PlannedAction]:
    """Claim up to `limit` due actions for `worker_id`, in priority order.

    First the rows whose lease ran out (their dispatcher died or hung): they were at the
    head of the queue when they were first claimed. Then planned rows that are due,
    highest priority first and, within a priority, the longest due first.

    Every statement reads only the rows it takes, however long the queue: the planned
    rows are claimed one priority at a time, each an index range of
    `ix_outbox_claim` (state, priority, next_attempt_at, id) read in order up to the
    room left, and the next lower priority is found by one index seek. (One statement
    ordering every due row by priority sorted the whole backlog for each batch: 150 ms
    on SQLite and 270 ms on PostgreSQL per claim of 500 at 400,000 due rows.)
    """
    values = {
        "state": "claimed",
        "claimed_by": worker_id,
        "lease_until": lease_until,
        "attempts": outbox.c.attempts + 1,
        "updated_at": now,
        "cap_reserved_at": None,  # a taken-over row passes its cap again
    }
    rows = _claim(connection, _taken_over(now), limit, values)
    level = _highest_planned_priority(connection, below=None)
    while len(rows) < limit and level is not None:
        due = sa.and_(
            outbox.c.state == "planned",
            outbox.c.priority == level,
            outbox.c.next_attempt_at <= now,
        )
        rows += _claim(connection, due, limit - len(rows), values)
        level = _highest_planned_priority(connection, below=level)
    actions = planned_actions(rows)
    # RETURNING order is unspecified; policies need priority order.
    actions.sort(key=lambda a: (-a.priority, a.id))
    return actions


def _taken_over(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(outbox.c.state == "claimed", outbox.c.lease_until < now)


def _claim(
    connection: Connection, condition: sa.ColumnElement[bool], room: int, values: dict
) -> list[sa.Row]:
    """Claim up to `room` rows meeting `condition`, in queue order. On PostgreSQL the
    rows are locked as they are read, skipping those another claim holds."""
    ids = (
        sa.select(outbox.c.id)
        .where(condition)
        .order_by(outbox.c.priority.desc(), outbox.c.next_attempt_at, outbox.c.id)
        .limit(room)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    if connection.dialect.name == "postgresql":
        # `id = ANY(ARRAY(...))`: the ids first, then one primary-key probe each. With
        # `id IN (...)` the planner may join them to a scan of the whole outbox.
        chosen = outbox.c.id == sa.any_(sa.func.array(ids))
    else:
        chosen = outbox.c.id.in_(ids)
    statement = sa.update(outbox).where(chosen).values(values).returning(*_RETURNED)
    return list(connection.execute(statement))


def _highest_planned_priority(connection: Connection, below: int | None) -> int | None:
    """The highest priority of a planned row (below `below`), due or not: one seek."""
    query = sa.select(outbox.c.priority).where(outbox.c.state == "planned")
    if below is not None:
        query = query.where(outbox.c.priority < below)
    return connection.execute(query.order_by(outbox.c.priority.desc()).limit(1)).scalar()


def renew_claims(
    connection: Connection, ids: Iterable[int], *, holder: str, lease_until: datetime
) -> set[int]:
    """Extend the lease of those of `ids` still held by `holder`; returns them (the
    others were taken over after the lease ran out). One UPDATE ... RETURNING."""
    wanted = sorted(ids)
    if not wanted:
        return set()
    statement = (
        sa.update(outbox)
        .where(among(outbox.c.id, wanted), held_by(holder))
        .values(lease_until=lease_until)
        .returning(outbox.c.id)
    )
    return set(connection.execute(statement).scalars())


def held_claims(connection: Connection, ids: Iterable[int], *, holder: str) -> set[int]:
    """Those of `ids` still held by `holder` (one SELECT)."""
    wanted = sorted(ids)
    if not wanted:
        return set()
    query = sa.select(outbox.c.id).where(among(outbox.c.id, wanted), held_by(holder))
    return set(connection.execute(query).scalars())


def release_claims(
    connection: Connection, ids: Iterable[int], *, holder: str, now: datetime
) -> set[int]:
    """Give back rows that were claimed but never handed to a channel (a dispatcher that
    stops): planned again, due at once for another dispatcher, claim cleared and the
    claim's attempt given back — nothing was tried, so a dispatcher stopped again and
    again cannot push an action to max_attempts. Returns the ids released (only rows
    `holder` still held)."""
    wanted = sorted(ids)
    if not wanted:
        return set()
    statement = (
        sa.update(outbox)
        .where(among(outbox.c.id, wanted), held_by(holder))
        .values(
            state="planned",
            claimed_by=None,
            lease_until=None,
            cap_reserved_at=None,
            attempts=sa.case((outbox.c.attempts > 0, outbox.c.attempts - 1), else_=0),
            updated_at=now,
        )
        .returning(outbox.c.id)
    )
    return set(connection.execute(statement).scalars())


class Lease:
    """The rows one claim still holds while its batch is being sent.

    `renew` extends the lease of every held row (when a third of the lease has passed
    since the last full renewal, so a fast batch never renews and a slow one renews a
    few times per lease); `fence` confirms the rows about to be sent (renewing when
    due). Rows a renewal or a fence does not get back were taken over: they move from
    `held` to `lost` and are never sent by this claim. Each is one statement, in the
    transaction given or in a short one of its own.
    """

    def __init__(
        self, store, holder: str, ids: Iterable[int], *, duration: timedelta, claimed_at: datetime
    ):
        self.store, self.holder, self.duration = store, holder, duration
        self.held: set[int] = set(ids)
        self.lost: set[int] = set()
        self.renewed_at = claimed_at

    def due(self, now: datetime) -> bool:
        return now - self.renewed_at >= self.duration / 3

    def renew(
        self,
        now: datetime,
        ids: Iterable[int] | None = None,
        connection: Connection | None = None,
    ) -> set[int]:
        """Extend to now + lease the held rows (all, or those of `ids`); returns those of
        them still held. In `connection`'s transaction, else in one of its own."""
        targets = set(self.held) if ids is None else self.held.intersection(ids)
        if targets:
            with contextlib.ExitStack() as stack:
                if connection is None:
                    connection = stack.enter_context(self.store.begin())
                kept = renew_claims(
                    connection, targets, holder=self.holder, lease_until=now + self.duration
                )
            self.lose(targets - kept)
        if ids is None:
            self.renewed_at = now
        return targets & self.held

    def fence(
        self, now: datetime, ids: Iterable[int], connection: Connection | None = None
    ) -> set[int]:
        """Before sending `ids`: those still held. When a renewal is due, every held
        row's lease is extended (one UPDATE); otherwise the lease has at least two thirds
        left and the rows are only confirmed (one SELECT, no row written)."""
        ids = set(ids)
        if self.due(now):
            return self.renew(now, None, connection) & ids
        targets = self.held & ids
        if targets:
            with contextlib.ExitStack() as stack:
                if connection is None:
                    connection = stack.enter_context(self.store.begin())
                kept = held_claims(connection, targets, holder=self.holder)
            self.lose(targets - kept)
        return targets & self.held

    def lose(self, ids: Iterable[int]) -> None:
        ids = self.held.intersection(ids)
        self.held -= ids
        self.lost |= ids

    def done(self, ids: Iterable[int]) -> None:
        """Rows recorded or released: no longer held."""
        self.held.difference_update(ids)


def record_outcomes(
    connection: Connection,
    decided: Sequence[tuple[PlannedAction, Outcome]],
    *,
    now: datetime,
    worker_id: str,
) -> set[int]:
    """Write each action's outcome; returns the ids written.

    `worker_id` is the claim's holder (`claimed_by`). Only rows it still holds are
    written: the others were taken over after the lease ran out, and the outcome
    recorded by the dispatcher that took them is kept. Their ids are missing from the
    result, and nothing is appended to their history.

    Outcomes that are the same for many rows (sent; skipped for one reason) are one
    UPDATE ... WHERE id IN (...) RETURNING id; the rest (retries and deferrals, each
    with its own time) are locked (`FOR UPDATE`) and go in one executemany. Every
    outcome but `sent` is also appended to delivery_attempts (a sent row's own sent_at,
    attempts and claimed_by already tell its story).
    """
    if not decided:
        return set()
    ours = held_by(worker_id)
    groups: dict[tuple, list[int]] = {}
    individual = []
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
    written: set[int] = set()
    for (state, reason, error), ids in groups.items():
        values = {
            "state": state,
            "reason": reason,
            "lease_until": None,
            "cap_reserved_at": None,
            "updated_at": now,
        }
        if state == "sent":
            values["sent_at"] = now
        else:
            values["last_error"] = error
        statement = (
            sa.update(outbox)
            .where(among(outbox.c.id, sorted(ids)), ours)
            .values(values)
            .returning(outbox.c.id)
        )
        written.update(connection.execute(statement).scalars())
    if individual:
        held = set(
            connection.execute(
                sa.select(outbox.c.id)
                .where(among(outbox.c.id, sorted(row["b_id"] for row in individual)), ours)
                .with_for_update()
            ).scalars()
        )
        individual = [row for row in individual if row["b_id"] in held]
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
                cap_reserved_at=None,
                updated_at=now,
            )
        )
        connection.execute(statement, individual)
        written.update(row["b_id"] for row in individual)
    history = [
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
        for action, outcome in decided
        if outcome.state != "sent" and action.id in written
    ]
    if history:
        connection.execute(sa.insert(attempts_table), history)
    return written
