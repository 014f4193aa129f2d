"""the outbox is claimed in queue order by index: (state, priority, next_attempt_at, id)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00

A claim takes the due rows of the highest priority first, the longest due first
(engine/delivery/claims.py). With `(state, next_attempt_at)` that order could only be
had by sorting every due row for each batch: 150-270 ms per claim of 500 at 400,000
due rows, so a large campaign was dispatched at the pace of the sort. The new index
holds each priority's planned rows in due order, so a claim reads only the rows it
takes. It replaces the old one (every query that used it filters on `state`, its
first column), so an outbox write updates as many indexes as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_claim", "outbox", ["state", "priority", "next_attempt_at", "id"], unique=False
    )
    op.drop_index("ix_outbox_state_due", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_state_due", "outbox", ["state", "next_attempt_at"], unique=False)
    op.drop_index("ix_outbox_claim", table_name="outbox")
