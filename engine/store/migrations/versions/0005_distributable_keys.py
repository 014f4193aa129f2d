"""keys a Citus cluster can enforce: user_id in every per-user key, a coupon code registry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

A sharded table can only enforce a primary key or unique constraint that contains
its distribution column (user_id). So (docs/scaling.md):

- per-user tables with a numbered id get `PRIMARY KEY (id, user_id)` on PostgreSQL;
  SQLite keeps `PRIMARY KEY (id)`, its rowid, which still numbers rows and makes
  (id, user_id) unique anyway (engine/store/keys.py);
- coupons: the action's key is unique per user, and codes are unique across shoppers
  through `coupon_codes`, a reference table filled here from the existing coupons;
- coupon redemptions: one per (user, event);
- unsubscribe tokens: one per user (the key), looked up through an index on the
  token; new tokens embed their user, hence the longer column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SURROGATE_KEYED = (
    "events",
    "stage_memberships",
    "decisions",
    "coupons",
    "coupon_redemptions",
    "delivery_attempts",
)
# SQLite reflects 0001's unnamed constraints without a name; batch mode names them
# with this convention so they can be dropped (Alembic's documented recipe).
SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s"}


def _unique(table: str, column: str, dialect: str) -> str:
    """The name 0001's unnamed UNIQUE(column) has on this backend."""
    return f"{table}_{column}_key" if dialect == "postgresql" else f"uq_{table}_{column}"


def _primary(table: str, dialect: str) -> str:
    return f"{table}_pkey" if dialect == "postgresql" else f"pk_{table}"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    codes = op.create_table(
        "coupon_codes",
        sa.Column("code_key", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("reserved_at", engine.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code_key"),
    )
    coupons = sa.table(
        "coupons",
        sa.column("code_key"),
        sa.column("user_id"),
        sa.column("idempotency_key"),
        sa.column("issued_at"),
    )
    op.execute(
        codes.insert().from_select(
            ["code_key", "user_id", "idempotency_key", "reserved_at"],
            sa.select(
                coupons.c.code_key,
                coupons.c.user_id,
                coupons.c.idempotency_key,
                coupons.c.issued_at,
            ),
        )
    )

    if dialect == "postgresql":
        # SQLite keeps its rowid key (see the module docstring).
        for table in SURROGATE_KEYED:
            op.drop_constraint(f"{table}_pkey", table, type_="primary")
            op.create_primary_key(f"{table}_pkey", table, ["id", "user_id"])

    with op.batch_alter_table("coupons", naming_convention=SQLITE_NAMES) as batch_op:
        for column in ("code", "code_key", "idempotency_key"):
            batch_op.drop_constraint(_unique("coupons", column, dialect), type_="unique")
        batch_op.create_unique_constraint(
            "uq_coupons_user_idempotency", ["user_id", "idempotency_key"]
        )
        batch_op.create_index("ix_coupons_code_key", ["code_key"], unique=False)

    with op.batch_alter_table("coupon_redemptions") as batch_op:
        batch_op.drop_constraint("uq_coupon_redemptions_event", type_="unique")
        batch_op.create_unique_constraint(
            "uq_coupon_redemptions_user_event", ["user_id", "event_id"]
        )

    with op.batch_alter_table("unsubscribe_tokens", naming_convention=SQLITE_NAMES) as batch_op:
        batch_op.drop_constraint(_primary("unsubscribe_tokens", dialect), type_="primary")
        batch_op.drop_constraint(_unique("unsubscribe_tokens", "user_id", dialect), type_="unique")
        batch_op.alter_column(
            "token", existing_type=sa.String(length=64), type_=sa.String(length=1024)
        )
        batch_op.create_primary_key(_primary("unsubscribe_tokens", dialect), ["user_id"])
        batch_op.create_index("ix_unsubscribe_tokens_token", ["token"], unique=False)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("unsubscribe_tokens", naming_convention=SQLITE_NAMES) as batch_op:
        batch_op.drop_index("ix_unsubscribe_tokens_token")
        batch_op.drop_constraint(_primary("unsubscribe_tokens", dialect), type_="primary")
        batch_op.alter_column(
            "token", existing_type=sa.String(length=1024), type_=sa.String(length=64)
        )
        batch_op.create_primary_key(_primary("unsubscribe_tokens", dialect), ["token"])
        batch_op.create_unique_constraint(
            _unique("unsubscribe_tokens", "user_id", dialect), ["user_id"]
        )
    with op.batch_alter_table("coupon_redemptions") as batch_op:
        batch_op.drop_constraint("uq_coupon_redemptions_user_event", type_="unique")
        batch_op.create_unique_constraint("uq_coupon_redemptions_event", ["event_id"])
    with op.batch_alter_table("coupons", naming_convention=SQLITE_NAMES) as batch_op:
        batch_op.drop_index("ix_coupons_code_key")
        batch_op.drop_constraint("uq_coupons_user_idempotency", type_="unique")
        for column in ("code", "code_key", "idempotency_key"):
            batch_op.create_unique_constraint(_unique("coupons", column, dialect), [column])
    if dialect == "postgresql":
        for table in SURROGATE_KEYED:
            op.drop_constraint(f"{table}_pkey", table, type_="primary")
            op.create_primary_key(f"{table}_pkey", table, ["id"])
    op.drop_table("coupon_codes")
