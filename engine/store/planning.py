"""Tables written by rule evaluation: runs, per-user decisions and the outbox.

The unique keys here are the at-most-once guarantee (DESIGN invariant 1): a
(rule, slot) is evaluated by one daemon, and a (rule, user, occurrence) is decided
once, whatever the number of daemons, retries or restarts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from engine.store.keys import surrogate_id
from engine.store.placement import coordinator_local, per_user, reference
from engine.store.types import BigId, JsonDocument, UTCDateTime


class Run(SQLModel, table=True):
    """One evaluation of one rule at one instant T."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("rule_id", "slot", name="uq_runs_rule_slot"),
        # The daemon reads a rule's latest runs every tick (watermark, last slot).
        Index("ix_runs_rule_at", "rule_id", "at"),
        # Few rows (one per rule and slot), joined with decisions on every worker.
        reference(),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True))
    rule_id: str = Field(max_length=128, index=True)
    rule_hash: str = Field(max_length=64)
    # The claimed time slot: T itself for manual fires, the fire time for schedules.
    slot: str = Field(max_length=64)
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    mode: str = Field(default="run", max_length=16)  # run | fire | shadow
    status: str = Field(default="running", max_length=16)  # running | done | failed | missed
    counts: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JsonDocument, nullable=False)
    )
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    duration_ms: int | None = None


class Decision(SQLModel, table=True):
    """What one run decided for one user and one occurrence, with the reason."""

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint(
            "rule_id", "user_id", "occurrence_key", name="uq_decisions_rule_user_occurrence"
        ),
        Index("ix_decisions_user_rule", "user_id", "rule_id", "decided_at"),
        Index("ix_decisions_run", "run_id"),
        # Follow-ups: the decisions due in a window, or decided since the last tick.
        Index("ix_decisions_rule_occurred", "rule_id", "outcome", "occurred_at"),
        Index("ix_decisions_rule_decided", "rule_id", "decided_at"),
        per_user(rowid_key="id"),
    )

    id: int | None = Field(default=None, sa_column=surrogate_id())
    run_id: int = Field(sa_column=Column(BigId, nullable=False))
    rule_id: str = Field(max_length=128)
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    occurrence_key: str = Field(max_length=128)
    # planned | held_out | suppressed | shadow
    outcome: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    variant: str | None = Field(default=None, max_length=64)
    decided_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # When the occurrence happened (the event's time, the stage's natural entry, the
    # schedule slot; for a follow-up, when it fell due): what `after:` waits from.
    # Never NULL since schema 0007 (the decision instant when a trigger gives none).
    occurred_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The start of the chain: the occurrence itself, or for a follow-up the original
    # occurrence it follows (the add-to-cart of `after: cart-seen`). `since="trigger"`
    # windows start here, at planning, at send time and in explain alike.
    trigger_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # The triggering event of an event rule, so `unless` can read its fields at send time.
    event_id: int | None = Field(default=None, sa_column=Column(BigId))
    # MD5 of the occurrence's natural identity (the event's source id, the stage and
    # its entry instant, the schedule slot, the followed decision's rule and ref): what
    # idempotency keys derive from, never row numbers, so that a restored database or
    # a second install cannot reuse a key for a different message (DESIGN invariant 9).
    occurrence_ref: str | None = Field(default=None, max_length=32)


class OutboxAction(SQLModel, table=True):
    """One planned action for one user, delivered by a dispatcher.

    `idempotency_key` is derived from (rule, user, occurrence, action) so that a
    channel can drop a duplicate even if a dispatcher crashes after sending.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The claim's queue order: each priority's due rows are one range, read in
        # order (engine/delivery/claims.py).
        Index("ix_outbox_claim", "state", "priority", "next_attempt_at", "id"),
        Index("ix_outbox_user", "user_id", "channel", "created_at"),
        Index("ix_outbox_decision", "decision_id"),
        Index("ix_outbox_run", "run_id"),
        # Claimed with FOR UPDATE SKIP LOCKED, which Citus runs only on a single
        # node: the outbox stays on the coordinator (docs/scaling.md).
        coordinator_local(),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True))
    idempotency_key: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    decision_id: int = Field(sa_column=Column(BigId, nullable=False))
    run_id: int = Field(sa_column=Column(BigId, nullable=False))
    rule_id: str = Field(max_length=128)
    user_id: str = Field(max_length=128)
    kind: str = Field(max_length=32)  # coupon | audience | email | sms | webhook | tag
    channel: str = Field(max_length=32)
    variant: str | None = Field(default=None, max_length=64)
    priority: int = 0
    payload: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JsonDocument, nullable=False)
    )
    # planned | claimed | sent | skipped | dead
    state: str = Field(default="planned", max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    claimed_by: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Set while claimed, once the action passed its frequency cap: its slot is taken
    # until it is recorded (engine/delivery/policy.py, migration 0009).
    cap_reserved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class Installation(SQLModel, table=True):
    """One row made when the schema is created: this database's install id.

    Every idempotency key includes it, so two shops (or a staging copy) running Nudge
    never send the same Message-ID or webhook-id for different messages.
    """

    __tablename__ = "installation"
    __table_args__ = reference()

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ChangeCounter(SQLModel, table=True):
    """A counter bumped by every commit that may give rules something new to do.

    Daemons on SQLite poll it (one indexed read a second); on PostgreSQL the same
    commit also sends NOTIFY, and the counter is the safety net (engine/store/changes.py).
    """

    __tablename__ = "change_counters"
    # One hot row bumped by every ingest: a reference table would write it on every node.
    __table_args__ = coordinator_local()

    name: str = Field(sa_column=Column(String(32), primary_key=True))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))


class DaemonProcess(SQLModel, table=True):
    """One `nudge run` process: who it is and when it last showed signs of life."""

    __tablename__ = "daemons"
    __table_args__ = coordinator_local()

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    heartbeat_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    stopped_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Its own tick (`--tick-seconds` may differ from nudge.toml): `nudge status` calls a
    # daemon gone after three of them without a heartbeat.
    tick_seconds: float = Field(default=60.0)
