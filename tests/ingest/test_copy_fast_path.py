"""PostgreSQL: a batch of new events is COPYed straight into `events`; one that meets a
stored event (or holds one twice) is rolled back to its savepoint and written the
staging way (COPY into a temp table, INSERT ... SELECT ... ON CONFLICT DO NOTHING).

Which way a batch went is read from the server's own counters of the transaction
(`pg_stat_xact_all_tables`): rows inserted into the staging table. What is stored, what
is counted and the profiles are the same either way.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.ingest.writers import BatchWriter
from engine.store.people import Event
from engine.store.profiles import PROFILE_COLUMNS, profile_aggregates, profiles
from tests.ingest.event_rows import event_row

pytestmark = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
START = datetime(2026, 3, 1, tzinfo=UTC)
events = Event.__table__


def event(number: int, **fields) -> dict:
    row = event_row(
        source_id=f"s{number}",
        user_id=f"u{number % 3}",
        type="purchase" if number % 4 == 0 else "visit",
        occurred_at=START + timedelta(minutes=number * 7 % 50),
        properties={"n": number},
    )
    if row["type"] == "purchase":
        row["amount"], row["currency"] = Decimal(f"{number}.25"), "CNY"
    row.update(fields)
    return row


def staged_rows(connection: sa.Connection) -> int:
    """Rows the staging table holds in this transaction, as counted by the server: 0
    while every batch went straight into events (a later staged batch's TRUNCATE
    restarts the count)."""
    return connection.exec_driver_sql(
        "SELECT n_tup_ins FROM pg_stat_xact_all_tables "
        "WHERE relid = 'pg_temp.nudge_ingest_events'::regclass"
    ).scalar_one()


def write_transaction(store, batches, now=NOW):
    """Write the batches in one transaction; (results, rows staged after each batch)."""
    with store.engine.connect() as connection:
        writer = BatchWriter(connection, now)
        writer.create_temp_tables()
        try:
            results, staged = [], []
            with connection.begin():
                writer.begin_events()
                for rows in batches:
                    results.append(writer.add_events(rows, require_users=False))
                    staged.append(staged_rows(connection))
                writer.end_events()
            return results, staged
        finally:
            with connection.begin():
                writer.drop_temp_tables()


def stored(store) -> dict[str, dict]:
    with store.connect() as connection:
        rows = connection.execute(sa.select(events).order_by(events.c.id)).mappings()
        found: dict[str, dict] = {}
        for row in rows:
            assert row["source_id"] not in found, f"{row['source_id']} stored twice"
            found[row["source_id"]] = dict(row)
        return found


def assert_profiles_cover_every_event_once(store) -> None:
    columns = [profiles.c.user_id, *(profiles.c[name] for name in PROFILE_COLUMNS)]
    with store.connect() as connection:
        maintained = connection.execute(sa.select(*columns).order_by(profiles.c.user_id)).all()
        query = profile_aggregates().subquery()
        recomputed = connection.execute(
            sa.select(query.c.user_id, *(query.c[name] for name in PROFILE_COLUMNS)).order_by(
                query.c.user_id
            )
        ).all()
    assert [tuple(row) for row in maintained] == [tuple(row) for row in recomputed]
    assert maintained


def test_new_events_are_copied_straight_into_events(store):
    results, staged = write_transaction(store, [[event(n) for n in range(40)]])

    assert staged == [0]
    assert (results[0].inserted, results[0].duplicates) == (40, 0)
    found = stored(store)
    assert set(found) == {f"s{n}" for n in range(40)}
    assert found["s4"]["amount"] == pytest.approx(4.25) and found["s4"]["properties"] == {"n": 4}
    assert found["s5"]["occurred_at"] == START + timedelta(minutes=35)
    assert found["s5"]["ingested_at"] == NOW
    assert_profiles_cover_every_event_once(store)


def test_a_batch_meeting_a_stored_event_is_written_the_staging_way(store):
    write_transaction(store, [[event(n) for n in range(10)]])
    fresh = [event(n) for n in range(100, 120)]
    # Event 3 again, from a later import: already stored, so it is skipped.
    again = [event(n) for n in range(200, 210)] + [event(3, properties={"later": True})]

    results, staged = write_transaction(store, [fresh, again], now=LATER)

    assert staged == [0, len(again)]  # the first batch went straight in, the second did not
    assert [(r.inserted, r.duplicates) for r in results] == [(20, 0), (10, 1)]
    found = stored(store)
    assert len(found) == 40
    assert found["s3"]["properties"] == {"n": 3} and found["s3"]["ingested_at"] == NOW
    assert found["s200"]["ingested_at"] == LATER
    assert_profiles_cover_every_event_once(store)


def test_a_duplicate_of_an_earlier_batch_of_the_transaction_is_stored_once(store):
    first = [event(n) for n in range(30)]
    second = [event(n) for n in range(30, 40)] + [event(7, properties={"second": True})]

    results, staged = write_transaction(store, [first, second])

    assert staged == [0, len(second)]
    assert [(r.inserted, r.duplicates) for r in results] == [(30, 0), (10, 1)]
    found = stored(store)
    assert len(found) == 40 and found["s7"]["properties"] == {"n": 7}
    # The rolled-back COPY left nothing behind for the profiles either.
    assert_profiles_cover_every_event_once(store)


def test_an_event_twice_in_a_batch_stores_the_first_in_index_order(store):
    rows = [event(n) for n in range(20)]
    # Same user and source id as s1 (u1, a visit): a later line but an earlier type
    # ("ad_click" < "visit") is first in (user, type, time) order, and is stored.
    rows.append(event(1, type="ad_click", properties={"winner": True}))
    rows.append(event(4, type="zzz", properties={"winner": False}))

    results, staged = write_transaction(store, [rows])

    assert staged == [len(rows)]
    assert (results[0].inserted, results[0].duplicates) == (20, 2)
    found = stored(store)
    assert found["s1"]["type"] == "ad_click" and found["s1"]["properties"] == {"winner": True}
    assert found["s4"]["type"] == "purchase"
    assert_profiles_cover_every_event_once(store)


def _waiting_for_a_lock(store, pid: int) -> bool:
    with store.connect() as connection:
        return connection.exec_driver_sql(
            f"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = {int(pid)}"
        ).scalar_one()


def test_concurrent_imports_of_the_same_events_store_them_once(store):
    """The second import's COPY waits for the first's uncommitted rows, meets them once
    the first commits, and falls back to skipping them."""
    rows = [event(n) for n in range(50)]
    outcome: dict[str, object] = {}

    with store.engine.connect() as first:
        writer = BatchWriter(first, NOW)
        writer.create_temp_tables()
        transaction = first.begin()
        writer.begin_events()
        assert writer.add_events(rows, require_users=False).inserted == 50
        writer.end_events()

        with store.engine.connect() as second:
            pid = second.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            second.rollback()

            def run_second() -> None:
                try:
                    outcome["results"], outcome["staged"] = _second_import(second, rows)
                except BaseException as exc:  # re-raised in the test's thread
                    outcome["error"] = exc

            thread = threading.Thread(target=run_second)
            thread.start()
            deadline = time.monotonic() + 30
            while not _waiting_for_a_lock(store, pid):
                assert thread.is_alive() and time.monotonic() < deadline, outcome
            transaction.commit()
            thread.join(timeout=30)
            with first.begin():
                writer.drop_temp_tables()

    assert "error" not in outcome, outcome.get("error")
    results = outcome["results"]
    assert (results.inserted, results.duplicates) == (0, 50)
    assert outcome["staged"] == 50
    assert len(stored(store)) == 50
    assert_profiles_cover_every_event_once(store)


def _second_import(connection: sa.Connection, rows: list[dict]):
    writer = BatchWriter(connection, LATER)
    writer.create_temp_tables()
    try:
        with connection.begin():
            writer.begin_events()
            result = writer.add_events(rows, require_users=False)
            writer.end_events()
            return result, staged_rows(connection)
    finally:
        with connection.begin():
            writer.drop_temp_tables()


def rows_written_to_events(connection: sa.Connection) -> int:
    """Rows this transaction wrote into `events`, counted by the server: also those a
    COPY wrote before it failed on a stored event (rolled back with its savepoint)."""
    return connection.exec_driver_sql(
        "SELECT n_tup_ins FROM pg_stat_xact_all_tables WHERE relid = 'events'::regclass"
    ).scalar_one()


def test_after_a_batch_that_met_stored_events_the_next_skips_the_copy(store):
    """A file imported again: only its first batch tries the COPY (which fails on its
    first stored row); the next goes the staging way at once. A batch that met no
    stored event sends the one after it the COPY way again."""
    write_transaction(store, [[event(n) for n in range(30)]])
    batches = [
        [event(n) for n in range(0, 10)],  # stored: the COPY fails, then staged
        [event(n) for n in range(10, 20)],  # stored: staged without a COPY
        [event(n) for n in range(100, 110)],  # new, staged (the last met stored ones)
        [event(n) for n in range(200, 210)],  # new: COPYed
    ]
    with store.engine.connect() as connection:
        writer = BatchWriter(connection, LATER)
        writer.create_temp_tables()
        inserted, written, staged = [], [], []
        with connection.begin():
            writer.begin_events()
            for rows in batches:
                before = rows_written_to_events(connection)
                inserted.append(writer.add_events(rows, require_users=False).inserted)
                written.append(rows_written_to_events(connection) - before)
                staged.append(staged_rows(connection))
            writer.end_events()
        with connection.begin():
            writer.drop_temp_tables()

    assert inserted == [0, 0, 10, 10]
    # The failed COPY wrote its rows (COPY inserts by buffers of up to 1,000 rows, then
    # their index entries) before the unique index refused one; the second wrote none.
    assert written == [10, 0, 10, 10]
    assert staged == [10, 10, 10, 10]  # the last batch staged nothing (no TRUNCATE)
    assert len(stored(store)) == 50
    assert_profiles_cover_every_event_once(store)
