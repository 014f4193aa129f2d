"""Tables about shoppers: users, their tags, events, profiles and stage history.

Every table is keyed by `user_id` so the store can be sharded by user (Citus) and
every rule query joins on it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Boolean, Column, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from engine.store.keys import surrogate_id
from engine.store.placement import per_user, reference
from engine.store.types import JsonDocument, Money, UTCDateTime


class User(SQLModel, table=True):
    """A shopper, known by the shop's own id."""

    __tablename__ = "users"
    __table_args__ = (
        # The users the next stage refresh must recompute, found without a scan. Partial:
        # only flagged users are in it, and the predicate is written as the lifecycle's
        # queries write it (engine/lifecycle/dirty.py), which the planners need to use it.
        Index(
            "ix_users_stage_dirty",
            "id",
            sqlite_where=sa.column("stage_dirty").is_(True),
            postgresql_where=sa.column("stage_dirty").is_(True),
        ),
        # The user id is the distribution column: every per-user table is co-located here.
        per_user(column="id"),
    )

    id: str = Field(sa_column=Column(String(128), primary_key=True))
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    name: str | None = Field(default=None, max_length=200)
    country: str | None = Field(default=None, max_length=2)
    timezone: str | None = Field(default=None, max_length=64)
    locale: str | None = Field(default=None, max_length=16)
    member_tier: str | None = Field(default=None, max_length=32, index=True)
    # Indexed: the stage refresh finds the members whose signup crossed a threshold
    # (engine/lifecycle/crossings.py).
    member_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JsonDocument, nullable=False)
    )
    email_opt_in: bool = False
    sms_opt_in: bool = False
    ads_opt_in: bool = False
    unsubscribed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # Set when the user's data changed (ingest); the stage refresh then recomputes
    # this user instead of everyone (engine/lifecycle/).
    stage_dirty: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=sa.text("true"))
    )
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class UserTag(SQLModel, table=True):
    """One tag of one user: a row each so `has_tag` is an indexed lookup."""

    __tablename__ = "user_tags"
    __table_args__ = (Index("ix_user_tags_tag", "tag", "user_id"), per_user())

    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    tag: str = Field(sa_column=Column(String(64), primary_key=True))


class Event(SQLModel, table=True):
    """Something a user did at a time. `source_id` makes re-imports idempotent."""

    __tablename__ = "events"
    __table_args__ = (
        # (user_id, source_id) rather than source_id alone: a unique key must contain
        # the distribution column on a sharded store, and a re-import carries both.
        UniqueConstraint("user_id", "source_id", name="uq_events_user_source"),
        Index("ix_events_user_type_time", "user_id", "type", "occurred_at"),
        Index("ix_events_type_time", "type", "occurred_at"),
        # The daemon's steady tick reads the events of a type ingested since the last.
        Index("ix_events_type_ingested", "type", "ingested_at"),
        per_user(rowid_key="id"),
    )

    id: int | None = Field(default=None, sa_column=surrogate_id())
    source_id: str = Field(max_length=128)
    user_id: str = Field(max_length=128, primary_key=True)
    type: str = Field(max_length=64)
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    # In the shop currency: a purchase in another currency is converted at ingest
    # ([currency] rates), so every sum, profile and KPI adds like with like.
    amount: Decimal | None = Field(default=None, sa_column=Column(Money))
    currency: str | None = Field(default=None, max_length=3)
    # What the shop sent, when it was another currency (coupon redemption compares
    # a coupon's currency and minimum order with these).
    original_amount: Decimal | None = Field(default=None, sa_column=Column(Money))
    original_currency: str | None = Field(default=None, max_length=3)
    order_id: str | None = Field(default=None, max_length=128)
    coupon_code: str | None = Field(default=None, max_length=64)
    utm_source: str | None = Field(default=None, max_length=128)
    utm_medium: str | None = Field(default=None, max_length=128)
    utm_campaign: str | None = Field(default=None, max_length=128)
    utm_content: str | None = Field(default=None, max_length=128)
    utm_term: str | None = Field(default=None, max_length=128)
    properties: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JsonDocument, nullable=False)
    )
    ingested_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Profile(SQLModel, table=True):
    """Per-user aggregates over all stored events, maintained on ingest.

    They describe the store as of its newest event; evaluating at an earlier T
    derives the same columns from events instead (engine/store/profiles.py).
    """

    __tablename__ = "profiles"
    __table_args__ = per_user()

    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    # The dates the stage thresholds count from are indexed: the stage refresh finds
    # the users who crossed one by range scans (engine/lifecycle/crossings.py).
    first_seen_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))
    # Indexed also because max(last_seen_at) says which instant the profiles describe.
    last_seen_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, index=True))
    signup_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    first_purchase_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_purchase_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, index=True)
    )
    last_visit_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    purchase_count: int = 0
    refund_count: int = 0
    total_spent: Decimal = Field(default=Decimal("0"), sa_column=Column(Money, nullable=False))
    avg_order_value: Decimal | None = Field(default=None, sa_column=Column(Money))
    event_count: int = 0
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class StageMembership(SQLModel, table=True):
    """One stay of one user in one lifecycle stage; `exited_at` NULL = current.

    History is kept: a stage trigger fires once per row (per entry), keyed by its id.
    """

    __tablename__ = "stage_memberships"
    __table_args__ = (
        Index("ix_stage_memberships_user_open", "user_id", "exited_at"),
        Index("ix_stage_memberships_stage_entered", "stage", "entered_at"),
        # The stage trigger's steady-state tick reads entries recorded since its last run.
        Index("ix_stage_memberships_stage_recorded", "stage", "recorded_at"),
        # The latest refresh's instant, read before each refresh (a scan without it).
        Index("ix_stage_memberships_recorded", "recorded_at"),
        per_user(rowid_key="id"),
    )

    id: int | None = Field(default=None, sa_column=surrogate_id())
    user_id: str = Field(max_length=128, primary_key=True)
    stage: str = Field(max_length=32)
    entered_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    exited_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    recorded_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class LifecycleMark(SQLModel, table=True):
    """Up to which instant, and with which thresholds, stages were last refreshed.

    Lets a refresh recompute only users whose data changed or who crossed a time
    threshold since then; different thresholds force a full refresh.
    """

    __tablename__ = "lifecycle_marks"
    __table_args__ = reference()

    name: str = Field(sa_column=Column(String(32), primary_key=True))
    as_of: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    settings_hash: str = Field(max_length=64)
