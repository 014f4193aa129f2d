"""ad spend per day, channel and campaign

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00

Spend files (`nudge ingest spend.csv`) store what each campaign of each ad channel
cost per shop-local day, in the shop currency (what the file said is kept when it
was another currency). Not per user: CAC and ROAS divide by it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import engine.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ad_spend",
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("campaign", sa.String(length=128), nullable=False),
        sa.Column("cost", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("original_cost", sa.Numeric(precision=14, scale=2), nullable=True),
        sa.Column("original_currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
        sa.Column("ingested_at", engine.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("date", "channel", "campaign"),
    )


def downgrade() -> None:
    op.drop_table("ad_spend")
