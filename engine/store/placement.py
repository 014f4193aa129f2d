"""Where each table lives on a Citus cluster, declared beside the table itself.

Every table says it in `table.info["citus"]`:

- `distributed`: one shopper's rows, sharded by `table.info["distribution_column"]`
  (`user_id`; `id` for `users`, whose id is the user id) and co-located with
  `users`, so a rule's query over users, profiles, events and decisions runs on each
  worker for its own shoppers. Every primary key and unique constraint of such a table
  includes the distribution column (Citus can only enforce uniqueness inside a shard).
- `reference`: small tables every worker needs a copy of to join with (runs, the coupon
  code registry, ad spend...). Any key works; writes go to every node.
- `local`: coordinator-only tables that are never joined on a worker and take
  row-locking claims or hot single-row writes (the outbox, the change counter,
  the daemons). `FOR UPDATE SKIP LOCKED` works on them unchanged.

On SQLite and plain PostgreSQL the declarations change nothing; `nudge db distribute`
(engine/store/distribute.py) reads them, and tests/store/test_distribution_keys.py
fails when a table lacks one or a distributed key lacks its distribution column.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

DISTRIBUTED = "distributed"
REFERENCE = "reference"
LOCAL = "local"
PLACEMENTS = (DISTRIBUTED, REFERENCE, LOCAL)

# The table every distributed table is co-located with.
ANCHOR_TABLE = "users"


def per_user(*, column: str = "user_id", rowid_key: str | None = None) -> dict[str, Any]:
    """Table keyword arguments (the dict closing `__table_args__`) for a per-user table.

    `rowid_key`: the surrogate id of a table whose declared primary key is
    (id, user_id); SQLite keeps `PRIMARY KEY (id)` so that it still numbers rows
    itself (engine/store/keys.py).
    """
    info: dict[str, Any] = {"citus": DISTRIBUTED, "distribution_column": column}
    if rowid_key is not None:
        info["sqlite_rowid_key"] = rowid_key
    return {"info": info}


def reference() -> dict[str, Any]:
    return {"info": {"citus": REFERENCE}}


def coordinator_local() -> dict[str, Any]:
    return {"info": {"citus": LOCAL}}


def placement_of(table: sa.Table) -> str | None:
    return table.info.get("citus")


def distribution_column(table: sa.Table) -> str | None:
    if placement_of(table) != DISTRIBUTED:
        return None
    return table.info.get("distribution_column", "user_id")
