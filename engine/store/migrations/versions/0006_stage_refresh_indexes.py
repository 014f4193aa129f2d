"""indexes for an incremental stage refresh: threshold dates, dirty users

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00

A steady stage refresh recomputes only the users whose data changed (stage_dirty) or
one of whose dates crossed a threshold since the previous refresh
(engine/lifecycle/crossings.py). These indexes let it find them by index range scans
instead of reading every user: the dates the thresholds count from that were not yet
indexed (users.member_since, profiles.first_seen_at; last_seen_at and
last_purchase_at already are), the flagged users (a partial index, empty when nothing
changed), and stage_memberships.recorded_at (the latest refresh's instant).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_users_member_since", "users", ["member_since"], unique=False)
    flagged = sa.column("stage_dirty").is_(True)
    op.create_index(
        "ix_users_stage_dirty",
        "users",
        ["id"],
        unique=False,
        sqlite_where=flagged,
        postgresql_where=flagged,
    )
    op.create_index("ix_profiles_first_seen_at", "profiles", ["first_seen_at"], unique=False)
    op.create_index(
        "ix_stage_memberships_recorded", "stage_memberships", ["recorded_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_stage_memberships_recorded", table_name="stage_memberships")
    op.drop_index("ix_profiles_first_seen_at", table_name="profiles")
    op.drop_index("ix_users_stage_dirty", table_name="users")
    op.drop_index("ix_users_member_since", table_name="users")
