"""Readers and writers: `store.read()` neither blocks the daemon's writes nor waits for
them on SQLite, and refuses to write on both backends; writers keep BEGIN IMMEDIATE."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.checking.check import check_project
from engine.coupons.export import export_coupons
from engine.delivery.status import delivery_status
from engine.stats import shop_stats
from engine.store import open_store
from engine.users import user_detail
from tests.planning.helpers import ingest, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
# A reader that waited for the write lock would fail after this long with "database
# is locked", instead of hanging for the production 30 s.
SHORT_BUSY_TIMEOUT = 0.3


@pytest.fixture
def short_busy_timeout(monkeypatch):
    monkeypatch.setattr("engine.store.database.SQLITE_BUSY_TIMEOUT", SHORT_BUSY_TIMEOUT)


def shop(store, folder) -> None:
    ingest(
        store,
        folder,
        now=T,
        users=[{"id": "u1", "member_tier": "gold", "email": "u1@example.com"}],
        events=[
            {
                "user": "u1",
                "type": "purchase",
                "amount": 120,
                "at": (T - timedelta(days=3)).isoformat(),
            }
        ],
    )


@contextmanager
def write_in_progress(store) -> Iterator[None]:
    """What the daemon does in the middle of a tick: a write transaction, uncommitted."""
    with store.connect() as writer:
        transaction = writer.begin()  # BEGIN IMMEDIATE: the write lock
        writer.execute(sa.text("INSERT INTO user_tags (user_id, tag) VALUES ('u1', 'held')"))
        try:
            yield
        finally:
            transaction.rollback()


def user_count(connection) -> int:
    return connection.execute(sa.text("SELECT count(*) FROM users")).scalar_one()


def tag_count(connection) -> int:
    return connection.execute(sa.text("SELECT count(*) FROM user_tags")).scalar_one()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_read_only_commands_complete_while_a_write_transaction_is_open(
    store, settings, project_dir, tmp_path, monkeypatch, short_busy_timeout
):
    shop(store, tmp_path)
    write_rule(
        settings,
        "misspelt",
        'trigger: {stage: first_purchase}\nwhen:\n  - count("purchse", within="30d") >= 1\n'
        "actions:\n  tag: {add: [x]}\n",
    )
    monkeypatch.chdir(project_dir)
    runner = CliRunner()

    with write_in_progress(store):
        # nudge status, through the engine and through the command (whose store is
        # opened, schema check included, while the write lock is held).
        assert delivery_status(store).counts["planned"] == 0
        result = runner.invoke(app, ["status", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["counts"]["dead"] == 0

        # nudge stats and nudge users show, with the connection the command opens.
        with store.read() as connection:
            stats = shop_stats(connection, settings, T)
            detail = user_detail(connection, settings, "u1", T)
        assert stats["buyers"] == 1
        assert "held" not in detail["tags"]  # the open write is not seen

        # nudge coupons export.
        out = io.StringIO()
        assert export_coupons(store, out) == 0
        result = runner.invoke(app, ["coupons", "export"])
        assert result.exit_code == 0, result.output

        # nudge check: its store checks ran (they report the misspelt event type).
        report = check_project(settings, now=T)
        assert any("'purchse'" in d.message for d in report.diagnostics), [
            d.message for d in report.diagnostics
        ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_long_read_does_not_stop_a_writer(store, tmp_path, short_busy_timeout):
    shop(store, tmp_path)
    with store.read() as reader:
        assert tag_count(reader) == 0  # the read transaction (a WAL snapshot) is open
        with store.begin() as writer:  # would fail after the busy timeout if blocked
            writer.execute(sa.text("INSERT INTO user_tags (user_id, tag) VALUES ('u1', 'new')"))
        assert tag_count(reader) == 0  # still its own snapshot
    with store.read() as reader:
        assert tag_count(reader) == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_opening_the_store_does_not_wait_for_the_write_lock(
    store, settings, tmp_path, short_busy_timeout
):
    with write_in_progress(store):
        opened = open_store(settings)  # checks the schema revision
        opened.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_writers_still_take_the_write_lock_at_begin(store, tmp_path, short_busy_timeout):
    shop(store, tmp_path)
    with store.connect() as first:
        assert user_count(first) == 1  # only a read, yet BEGIN IMMEDIATE took the lock
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            with store.begin() as second:
                second.execute(sa.text("SELECT 1"))
        with store.read() as reader:  # readers are not stopped by it
            assert user_count(reader) == 1


def test_a_read_path_that_writes_fails_loudly(store, tmp_path):
    shop(store, tmp_path)
    writes = [
        "INSERT INTO user_tags (user_id, tag) VALUES ('u1', 'oops')",
        "UPDATE users SET member_tier = 'silver'",
        "CREATE TEMPORARY TABLE scratch (x INTEGER)",
    ]
    for statement in writes:
        with store.read() as connection:
            # SQLite: "attempt to write a readonly database" (query_only);
            # PostgreSQL: "cannot execute ... in a read-only transaction".
            with pytest.raises(sa.exc.DBAPIError, match="read-?only"):
                connection.execute(sa.text(statement))
    # Read-only does not outlive the read: the same (pooled) connections write again.
    with store.begin() as connection:
        connection.execute(sa.text("INSERT INTO user_tags (user_id, tag) VALUES ('u1', 'ok')"))
    with store.read() as connection:
        tags = connection.execute(sa.text("SELECT tag FROM user_tags")).scalars().all()
        # Also after a commit inside the read, the next transaction is read-only.
        connection.commit()
        with pytest.raises(sa.exc.DBAPIError, match="read-?only"):
            connection.execute(sa.text("DELETE FROM user_tags"))
    assert tags == ["ok"]


def test_reads_see_committed_data_and_stream(store, tmp_path):
    shop(store, tmp_path)
    with store.read() as connection:
        streamed = connection.execution_options(stream_results=True).execute(
            sa.text("SELECT id FROM users")
        )
        assert streamed.scalars().all() == ["u1"]
