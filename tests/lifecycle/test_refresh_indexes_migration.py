"""Revision 0006 on a populated 0005 store: the stage refresh's indexes, data kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command

from engine.config import Settings
from engine.lifecycle import refresh_stages
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.migrations import alembic_config, current_revision, upgrade

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
NEW_INDEXES = {
    "users": {"ix_users_member_since": ["member_since"], "ix_users_stage_dirty": ["id"]},
    "profiles": {"ix_profiles_first_seen_at": ["first_seen_at"]},
    "stage_memberships": {"ix_stage_memberships_recorded": ["recorded_at"]},
}


def _populate_0005(connection) -> None:
    """Two users, one flagged for the next stage refresh, with their profiles."""
    at = T.replace(tzinfo=None) if connection.dialect.name == "sqlite" else T
    old = at - timedelta(days=100)
    rows = {
        "users": [
            {"id": u, "attributes": "{}", "email_opt_in": False, "sms_opt_in": False,
             "ads_opt_in": False, "stage_dirty": dirty, "member_since": since,
             "created_at": at, "updated_at": at}
            for u, dirty, since in (("a", True, old), ("b", False, None))
        ],
        "events": [
            {"source_id": "e1", "user_id": "b", "type": "visit", "occurred_at": old,
             "properties": "{}", "ingested_at": at}
        ],
        "profiles": [
            {"user_id": "b", "first_seen_at": old, "last_seen_at": old, "purchase_count": 0,
             "refund_count": 0, "total_spent": 0, "event_count": 1, "updated_at": at}
        ],
    }  # fmt: skip
    for table, values in rows.items():
        for row in values:
            columns = ", ".join(row)
            params = ", ".join(f":{k}" for k in row)
            connection.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), row)


def _indexes(engine) -> dict[str, dict[str, list[str]]]:
    inspector = sa.inspect(engine)
    return {
        table: {
            index["name"]: index["column_names"]
            for index in inspector.get_indexes(table)
            if index["name"] in NEW_INDEXES[table]
        }
        for table in NEW_INDEXES
    }


def test_0006_adds_the_refresh_indexes_and_keeps_the_data(empty_url):
    engine = create_engine_for(empty_url)
    store = Store(engine=engine, settings=Settings())
    try:
        upgrade(store, "0005")
        with engine.begin() as connection:
            _populate_0005(connection)
        assert _indexes(engine) == {table: {} for table in NEW_INDEXES}

        upgrade(store, "0006")

        assert current_revision(store) == "0006"
        assert _indexes(engine) == NEW_INDEXES
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                # The partial index holds the flagged user only.
                flagged = connection.exec_driver_sql(
                    "SELECT id FROM users INDEXED BY ix_users_stage_dirty WHERE stage_dirty IS 1"
                ).all()
                assert flagged == [("a",)]
            else:
                definition = connection.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_users_stage_dirty'"
                ).scalar()
                assert definition.endswith("(id) WHERE (stage_dirty IS TRUE)")
            # The stage refresh runs on the upgraded store, over the old rows.
            refreshed = refresh_stages(connection, store.settings, T)
            assert refreshed.entered == {"lapsed_member": 1, "prospect": 1}

        command.downgrade(alembic_config(store), "0005")
        assert _indexes(engine) == {table: {} for table in NEW_INDEXES}
    finally:
        engine.dispose()
