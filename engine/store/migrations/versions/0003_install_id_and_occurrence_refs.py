"""install id, natural occurrence refs, runs by rule and time, daemons, change counter

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 16:00:00

Idempotency keys (email Message-ID, webhook-id) used to be built from row numbers:
two installs, or a database restored from a backup, sent the same ids for different
messages, and receivers that de-duplicate on them dropped real ones. Keys now derive
from an install id made here, once per database, and from each decision's natural
occurrence ref.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

import engine.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", engine.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(
        installation,
        [{"id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}],  # noqa: TID251
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("occurrence_ref", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )

    counters = op.create_table(
        "change_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(counters, [{"name": "data", "version": 0}])
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", engine.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", engine.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", engine.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("tick_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # What the daemon reads every tick: a rule's latest runs (watermark, last slot).
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_rule_at", ["rule_id", "at"], unique=False)
    # ...and the events of a type ingested since its previous tick.
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_type_ingested", ["type", "ingested_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_type_ingested")
    op.drop_table("daemons")
    op.drop_table("change_counters")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_rule_at")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("occurrence_ref")
    op.drop_table("installation")
