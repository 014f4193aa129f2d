"""Tables written by delivery: attempts, coupons, audiences and unsubscribe tokens.

Per-user tables carry `user_id` in every key (DESIGN "Scale", docs/scaling.md).
Where a row is the effect of one outbox action, the action's idempotency key is
unique here too (with the user), so a re-delivery
after a crash finds the first effect instead of making a second one (a second
coupon, a second audience add).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from engine.store.keys import surrogate_id
from engine.store.placement import per_user, reference
from engine.store.types import BigId, JsonDocument, Money, UTCDateTime


class DeliveryAttempt(SQLModel, table=True):
    """One try at delivering one outbox action: the audit trail behind its state."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index("ix_delivery_attempts_outbox", "outbox_id", "attempt"),
        per_user(rowid_key="id"),
    )

    id: int | None = Field(default=None, sa_column=surrogate_id())
    outbox_id: int = Field(sa_column=Column(BigId, nullable=False))
    user_id: str = Field(max_length=128, primary_key=True, index=True)
    attempt: int
    worker: str = Field(max_length=64)
    # sent | skipped | deferred | retry | dead
    outcome: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Coupon(SQLModel, table=True):
    """A code issued to one user by one delivered coupon action.

    `code` is printed (PREFIX-XXXX-XXXX); `code_key` is its normalised form
    (upper case, no hyphens, O->0, I/L->1) used to look up what a shopper typed.
    A code is unique across all shoppers through `coupon_codes` (a reference table,
    written in the same transaction): a sharded table can only enforce keys that
    contain the user.
    """

    __tablename__ = "coupons"
    __table_args__ = (
        Index("ix_coupons_user", "user_id", "issued_at"),
        Index("ix_coupons_code_key", "code_key"),
        # The action's key already names the user; with user_id it is enforceable per shard.
        UniqueConstraint("user_id", "idempotency_key", name="uq_coupons_user_idempotency"),
        per_user(rowid_key="id"),
    )

    id: int | None = Field(default=None, sa_column=surrogate_id())
    code: str = Field(sa_column=Column(String(64), nullable=False))
    code_key: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: str = Field(max_length=128, primary_key=True)
    rule_id: str = Field(max_length=128)
    idempotency_key: str = Field(sa_column=Column(String(64), nullable=False))
    value: Decimal | None = Field(default=None, sa_column=Column(Money))
    percent_off: int | None = None
    currency: str = Field(max_length=3)
    min_order: Decimal | None = Field(default=None, sa_column=Column(Money))
    issued_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    redeemed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    redeemed_order_id: str | None = Field(default=None, max_length=128)
    # Set when the message carrying the code was skipped or went dead: the shopper
    # never saw it, so it is not redeemable and costs nothing.
    voided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    void_reason: str | None = Field(default=None, max_length=64)


class CouponRedemption(SQLModel, table=True):
    """What became of one purchase event carrying a coupon code.

    One row per event (unique), so processing the same purchases again is a no-op,
    and refused codes stay visible: outcome redeemed | unknown | expired | foreign |
    already_used | void | wrong_currency | below_min_order, with `detail` in words.
    """

    __tablename__ = "coupon_redemptions"
    __table_args__ = (
        # An event id is unique on its own; with its user it is enforceable per shard.
        UniqueConstraint("user_id", "event_id", name="uq_coupon_redemptions_user_event"),
        per_user(rowid_key="id"),
    )

    id: int | None = Field(default=None, sa_column=surrogate_id())
    event_id: int = Field(sa_column=Column(BigId, nullable=False))
    user_id: str = Field(max_length=128, primary_key=True, index=True)
    code_entered: str = Field(max_length=64)
    coupon_id: int | None = Field(default=None, sa_column=Column(BigId))
    order_id: str | None = Field(default=None, max_length=128)
    outcome: str = Field(max_length=16)
    # Why a code was refused, in words a support agent can repeat to the shopper.
    detail: str | None = Field(default=None, sa_column=Column(Text))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    processed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class AudienceMember(SQLModel, table=True):
    """One user in one audience; `removed_at` set when they leave (history kept)."""

    __tablename__ = "audience_members"
    __table_args__ = (
        Index("ix_audience_members_audience", "audience", "removed_at"),
        per_user(),
    )

    audience: str = Field(sa_column=Column(String(64), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    rule_id: str = Field(max_length=128)
    added_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    removed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    # no_ads_consent | unsubscribed | no_longer_qualifies
    removed_reason: str | None = Field(default=None, max_length=32)


class AudienceSyncedMember(SQLModel, table=True):
    """What a platform holds after the last sync: the identifiers as uploaded.

    Removes must send the same hashes that were added, even if the user has since
    changed their email or been deleted, so they are kept here.
    """

    __tablename__ = "audience_synced_members"
    __table_args__ = per_user()

    audience: str = Field(sa_column=Column(String(64), primary_key=True))
    platform: str = Field(sa_column=Column(String(16), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    identifiers: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JsonDocument, nullable=False)
    )
    synced_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class AudienceSync(SQLModel, table=True):
    """One `nudge audiences sync`: counts and the files written, for the audit trail."""

    __tablename__ = "audience_syncs"
    __table_args__ = (
        Index("ix_audience_syncs_audience", "audience", "platform", "synced_at"),
        reference(),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True))
    audience: str = Field(max_length=64)
    platform: str = Field(max_length=16)
    added: int = 0
    removed: int = 0
    files: list[str] = Field(default_factory=list, sa_column=Column(JsonDocument, nullable=False))
    synced_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class UnsubscribeToken(SQLModel, table=True):
    """A random per-user token for the List-Unsubscribe link (nothing to forge or guess).

    One per user (the key). A token made since revision 0005 embeds its user
    (engine/delivery/unsubscribe.py), so a lookup by token alone is routed to that
    user's shard and two users' tokens can never be equal; older tokens (no embedded
    user) were unique when made and are still found by the token index.
    """

    __tablename__ = "unsubscribe_tokens"
    __table_args__ = (Index("ix_unsubscribe_tokens_token", "token"), per_user())

    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    token: str = Field(sa_column=Column(String(1024), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class CouponCode(SQLModel, table=True):
    """Every issued coupon code's key, across all shoppers: what keeps codes unique.

    A reference table (a copy on every node), written in the transaction that issues
    the coupon: its primary key is enforced by the whole cluster, which a key of the
    sharded `coupons` table without the user could not be. `idempotency_key` names
    the coupon action that reserved the code, so a reservation that lost a race to
    another attempt at the same action is recognised and given back.
    """

    __tablename__ = "coupon_codes"
    __table_args__ = reference()

    code_key: str = Field(sa_column=Column(String(64), primary_key=True))
    user_id: str = Field(max_length=128)
    idempotency_key: str = Field(max_length=64)
    reserved_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
