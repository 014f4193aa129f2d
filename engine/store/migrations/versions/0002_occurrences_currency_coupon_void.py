"""occurrence times on decisions, original currency on events, coupon voids

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 15:40:00

Decisions remember when their occurrence happened and where its chain started, so
follow-ups wait from the occurrence and `since="trigger"` reads the same window at
planning, at send time and in explain. Events keep what the shop sent when it was in
another currency (amount itself is converted to the shop currency at ingest).
Coupons can be voided when the message carrying them never reached the shopper, and
a refused redemption says why.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import engine.store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSTANT = engine.store.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("occurred_at", _INSTANT, nullable=True))
        batch_op.add_column(sa.Column("trigger_at", _INSTANT, nullable=True))
        batch_op.add_column(
            sa.Column(
                "event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("original_amount", sa.Numeric(precision=14, scale=2), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "original_currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True
            )
        )
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("voided_at", _INSTANT, nullable=True))
        batch_op.add_column(
            sa.Column("void_reason", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    with op.batch_alter_table("coupon_redemptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coupon_redemptions", schema=None) as batch_op:
        batch_op.drop_column("detail")
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.drop_column("void_reason")
        batch_op.drop_column("voided_at")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("original_currency")
        batch_op.drop_column("original_amount")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("event_id")
        batch_op.drop_column("trigger_at")
        batch_op.drop_column("occurred_at")
