"""Surrogate ids in a primary key that also carries the user: (id, user_id).

Citus enforces a primary key only when it contains the distribution column, so a
per-user table with a numbered id declares `PRIMARY KEY (id, user_id)`: id first,
so a lookup by id alone (the dispatcher's `WHERE id IN (...)`) still uses the key's
index; user_id in it, so the key can be enforced shard by shard.

SQLite numbers rows itself only for a single-column `INTEGER PRIMARY KEY` (the rowid);
a composite key would leave `id` NULL. So on SQLite the same tables are created with
`PRIMARY KEY (id)`, which is a rowid alias as before. Nothing is lost: id alone being
unique makes (id, user_id) unique, and a SQLite store is never distributed. PostgreSQL
numbers ids with an identity (create_all) or the BIGSERIAL sequence (migrations).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import PrimaryKeyConstraint

from engine.store.types import BigId


def surrogate_id() -> sa.Column:
    """The numbered id of a per-user table; pair it with a `user_id` primary key column
    and `per_user(rowid_key="id")` in the table arguments."""
    return sa.Column("id", BigId, sa.Identity(), primary_key=True)


@compiles(PrimaryKeyConstraint, "sqlite")
def _rowid_primary_key(constraint, compiler, **kw):
    table = constraint.table
    rowid = table.info.get("sqlite_rowid_key") if table is not None else None
    if rowid is None:
        return compiler.visit_primary_key_constraint(constraint, **kw)
    return f"PRIMARY KEY ({compiler.preparer.quote(rowid)})"
