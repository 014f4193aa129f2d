"""follow-ups find their due decisions by index: every decision has its occurrence instant

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 10:00:00

An `after:` rule reads the followed rule's planned decisions whose wait elapsed since
the previous tick (engine/triggers/after.py). It used to filter on
`coalesce(occurred_at, decided_at)` (decisions older than 0002 have no occurrence
instant), which no index serves: every steady tick read all of the followed rule's
decisions of the last week (~120,000 at a million users). Now:

- decisions without an occurrence instant get their decision instant, which is what
  follow-ups waited from for them all along (nothing due moves), and new decisions are
  always written with one (engine/planning/writes.py);
- `(rule_id, outcome, occurred_at)` finds the decisions that fell due in a window,
  `(rule_id, decided_at)` those decided since the previous tick (a late-loaded
  occurrence is due at once).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    decisions = sa.table(
        "decisions", sa.column("occurred_at", sa.DateTime), sa.column("decided_at", sa.DateTime)
    )
    op.execute(
        decisions.update()
        .where(decisions.c.occurred_at.is_(None))
        .values(occurred_at=decisions.c.decided_at)
    )
    op.create_index(
        "ix_decisions_rule_occurred", "decisions", ["rule_id", "outcome", "occurred_at"]
    )
    op.create_index("ix_decisions_rule_decided", "decisions", ["rule_id", "decided_at"])


def downgrade() -> None:
    # The backfilled instants stay: they are what the older code computed anyway.
    op.drop_index("ix_decisions_rule_decided", table_name="decisions")
    op.drop_index("ix_decisions_rule_occurred", table_name="decisions")
