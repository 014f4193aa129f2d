"""outbox.cap_reserved_at: a claimed action that passed its frequency cap holds its slot

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 12:00:00

Frequency caps counted the sends recorded so far, so two dispatchers (two daemons, or
`[delivery] dispatchers = 2`) that each held one of a user's actions could both pass a
"one a day" cap before either recorded its send. A dispatcher now reserves the slot of
each action that passed every check, in a transaction that serialises the reservations
of one user (engine/delivery/policy.py); the others count reserved actions as sent
until they are recorded or their claim's lease runs out.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "cap_reserved_at", engine.store.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("cap_reserved_at")
