"""Revision 0005 on a populated 0001 store, and `nudge db distribute` without Citus."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.config import Settings
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.distribute import CitusUnavailable, distribute
from engine.store.migrations import upgrade
from tests.conftest import make_settings

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def _populate_0001(connection) -> None:
    at = T.replace(tzinfo=None) if connection.dialect.name == "sqlite" else T
    rows = {
        "users": [
            {"id": u, "attributes": "{}", "email_opt_in": True, "sms_opt_in": False,
             "ads_opt_in": False, "stage_dirty": True, "created_at": at, "updated_at": at}
            for u in ("a", "b")
        ],
        "events": [
            {"source_id": "e1", "user_id": "a", "type": "purchase", "occurred_at": at,
             "coupon_code": "SHOP-AAAA", "properties": "{}", "ingested_at": at}
        ],
        "decisions": [
            {"run_id": 1, "rule_id": "r", "user_id": "a", "occurrence_key": "k",
             "outcome": "planned", "decided_at": at}
        ],
        "coupons": [
            {"code": "SHOP-AAAA", "code_key": "SH0PAAAA", "user_id": "a", "rule_id": "r",
             "idempotency_key": "key-a", "currency": "CNY", "issued_at": at, "expires_at": at}
        ],
        "coupon_redemptions": [
            {"event_id": 1, "user_id": "a", "code_entered": "SHOP-AAAA", "coupon_id": 1,
             "outcome": "redeemed", "occurred_at": at, "processed_at": at}
        ],
        "unsubscribe_tokens": [{"token": "u" + "x" * 31, "user_id": "a", "created_at": at}],
    }  # fmt: skip
    for table, values in rows.items():
        for row in values:
            columns = ", ".join(row)
            params = ", ".join(f":{k}" for k in row)
            connection.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), row)


def test_0005_keeps_the_data_and_keys_every_per_user_row_by_its_user(empty_url):
    engine = create_engine_for(empty_url)
    store = Store(engine=engine, settings=Settings())
    try:
        upgrade(store, "0001")
        with engine.begin() as connection:
            _populate_0001(connection)
        upgrade(store)
        inspector = sa.inspect(engine)
        with engine.begin() as connection:
            assert connection.exec_driver_sql(
                "SELECT code_key, user_id, idempotency_key FROM coupon_codes"
            ).all() == [("SH0PAAAA", "a", "key-a")]
            assert connection.exec_driver_sql(
                "SELECT user_id, token FROM unsubscribe_tokens"
            ).all() == [("a", "u" + "x" * 31)]
            # Ids are still numbered by the database after the change of key.
            connection.exec_driver_sql(
                "INSERT INTO stage_memberships (user_id, stage, entered_at, recorded_at) "
                "VALUES ('b', 'new', '2026-11-20 02:00:00', '2026-11-20 02:00:00')"
            )
            ids = connection.exec_driver_sql("SELECT id FROM stage_memberships").scalars().all()
            assert ids == [1]
            assert connection.exec_driver_sql("SELECT count(*) FROM events").scalar() == 1
        tokens_key = inspector.get_pk_constraint("unsubscribe_tokens")["constrained_columns"]
        assert tokens_key == ["user_id"]
        coupon_uniques = {
            tuple(u["column_names"]) for u in inspector.get_unique_constraints("coupons")
        }
        assert coupon_uniques == {("user_id", "idempotency_key")}
        expected = ["id", "user_id"] if engine.dialect.name == "postgresql" else ["id"]
        for table in ("events", "decisions", "coupons", "coupon_redemptions"):
            assert inspector.get_pk_constraint(table)["constrained_columns"] == expected
    finally:
        engine.dispose()


def test_distribute_refuses_a_server_without_citus(store):
    if store.dialect == "sqlite":
        expected = (
            "nudge db distribute needs PostgreSQL with the citus extension; this store is sqlite"
        )
    else:
        # Not installed, or installed but not preloaded: refused either way, in one line.
        expected = (
            "the citus extension is not available on this PostgreSQL server",
            "cannot create the citus extension: ",
        )
    with pytest.raises(CitusUnavailable) as refused:
        distribute(store)
    assert str(refused.value).startswith(expected)
    assert "\n" not in str(refused.value)


def test_the_command_refuses_in_one_line(settings, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    make_settings(project_dir, database={"url": settings.database_url})
    result = CliRunner().invoke(app, ["db", "distribute"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "citus" in lines[0]
