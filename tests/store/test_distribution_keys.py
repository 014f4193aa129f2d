"""Every table can be placed on a Citus cluster (docs/scaling.md), checked on every run.

A per-user ("distributed") table's primary key and every unique constraint or index
must contain its distribution column: Citus enforces uniqueness shard by shard only.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.store.placement import ANCHOR_TABLE, DISTRIBUTED, PLACEMENTS, distribution_column
from engine.store.tables import metadata


def _unique_keys(table: sa.Table) -> list[tuple[str, list[str]]]:
    keys = [("primary key", [c.name for c in table.primary_key.columns])]
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            keys.append((f"unique {constraint.name}", [c.name for c in constraint.columns]))
    for index in table.indexes:
        if index.unique:
            keys.append((f"unique index {index.name}", [c.name for c in index.columns]))
    for column in table.columns:
        if column.unique:
            keys.append((f"unique column {column.name}", [column.name]))
    return keys


def test_every_table_declares_where_it_lives():
    undeclared = [t.name for t in metadata.sorted_tables if t.info.get("citus") not in PLACEMENTS]
    assert undeclared == []


def test_every_key_of_a_per_user_table_contains_its_user():
    missing = []
    for table in metadata.sorted_tables:
        column = distribution_column(table)
        if column is None:
            continue
        assert column in table.columns, f"{table.name}: no column {column}"
        missing += [
            f"{table.name}: {what} ({', '.join(columns)})"
            for what, columns in _unique_keys(table)
            if column not in columns
        ]
    assert missing == []


def test_distributed_tables_share_the_user_column_type_for_co_location():
    anchor = metadata.tables[ANCHOR_TABLE]
    expected = anchor.c[distribution_column(anchor)].type.compile()
    types = {
        table.name: table.c[distribution_column(table)].type.compile()
        for table in metadata.sorted_tables
        if table.info.get("citus") == DISTRIBUTED
    }
    assert {name: t for name, t in types.items() if t != expected} == {}


def test_the_outbox_is_a_coordinator_table_so_its_claims_can_lock_rows():
    assert metadata.tables["outbox"].info["citus"] == "local"
