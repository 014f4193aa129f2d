"""The staged event writer: what SQL converts (SQLite's JSON document, PostgreSQL's COPY)
is stored exactly as the column types stored it when Python converted each row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from engine.ingest import event_staging
from engine.ingest.writers import BatchWriter, sqlite_instant
from engine.store.people import Event
from tests.ingest.event_rows import event_row

NOW = datetime(2026, 6, 1, tzinfo=UTC)
events = Event.__table__
AWKWARD_TEXT = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash\\.",
    "\\N",
    "quote \" and ' and ,",
    "李雷 😀 é",
    "\u2028\u2029\x7f\x1c",
    "",
]


def event(number: int, **fields) -> dict:
    at = datetime(2026, 3, 1, 10, 0, number % 60, number, tzinfo=UTC)
    given = {"source_id": f"s{number}", "user_id": f"u{number % 3}", "type": "visit"}
    return event_row(**{**given, "occurred_at": at, **fields})


def write(store, rows, *, require_users=False):
    with store.engine.connect() as connection:
        writer = BatchWriter(connection, NOW)
        writer.create_temp_tables()
        try:
            with connection.begin():
                return writer.write_events(rows, require_users=require_users)
        finally:
            with connection.begin():
                writer.drop_temp_tables()


def stored(store) -> dict[str, dict]:
    with store.connect() as connection:
        rows = connection.execute(sa.select(events).order_by(events.c.id)).mappings()
        return {row["source_id"]: dict(row) for row in rows}


def test_awkward_values_are_stored_as_given(store):
    huge = {f"k{i}": "x\t\n\\" * 50 + str(i) for i in range(2000)}  # ~400 KB of JSON
    rows = [
        event(
            number,
            order_id=text or None,
            utm_term=text or None,
            coupon_code=None,
            properties={"text": text, "nested": {"list": [1, 2.5, None, True, text]}},
        )
        for number, text in enumerate(AWKWARD_TEXT)
    ]
    rows.append(event(100, properties=huge, utm_source="\\\t\n"))
    rows.append(event(101, properties={"big": 2**63 - 1, "small": -(2**63), "float": 1.5e-7}))

    result = write(store, rows)

    assert result.inserted == len(rows)
    found = stored(store)
    for row in rows:
        got = found[row["source_id"]]
        for name in event_staging.EVENT_FIELDS:
            assert got[name] == row[name], (name, row["source_id"])
        assert got["ingested_at"] == NOW


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the SQLite document path
def test_sqlite_stores_the_text_and_floats_python_converted_to(store):
    amounts = ["0.07", "0.10", "2.67", "19.99", "1234567.89", "999999999999.99", "0"]
    rows = [
        event(
            number,
            type="purchase",
            amount=Decimal(value),
            currency="CNY",
            original_amount=Decimal(value),
            original_currency="USD",
            properties={"a": "\t\\", "b": [1.5, 1e30, "😀"]},
        )
        for number, value in enumerate(amounts)
    ]
    rows.append(event(50, occurred_at=datetime(1, 1, 1, tzinfo=UTC)))
    rows.append(event(51, occurred_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)))

    write(store, rows)

    query = "SELECT source_id, occurred_at, amount, original_amount, properties FROM events"
    with store.connect() as connection:
        raw = {r[0]: r[1:] for r in connection.exec_driver_sql(query)}
    for row in rows:
        occurred_at, amount, original, properties = raw[row["source_id"]]
        assert occurred_at == sqlite_instant(row["occurred_at"])
        if row["amount"] is not None:
            # The same double as float(Decimal) (NUMERIC affinity stores 0.0 as 0 for both).
            assert amount == float(row["amount"])
            assert original == float(row["original_amount"])
        assert properties == orjson.dumps(row["properties"]).decode()


def test_instants_in_other_zones_are_stored_in_utc_and_naive_ones_refused(store):
    shanghai = timezone(timedelta(hours=8))
    at = datetime(2026, 3, 1, 18, 0, tzinfo=shanghai)

    write(store, [event(1, occurred_at=at)])

    assert stored(store)["s1"]["occurred_at"] == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    if store.engine.dialect.name != "sqlite":
        return  # COPY hands a naive time to the server, as it always did
    with pytest.raises((ValueError, sa.exc.StatementError)):
        write(store, [event(2, occurred_at=datetime(2026, 3, 1))])  # noqa: DTZ001


def test_several_documents_store_what_one_document_stores(store, monkeypatch):
    """A batch too large for one SQLite document is split in index order: the same
    first row of two sharing a source id wins, the same rows are counted."""
    rows = [event(number, properties={"pad": "x" * 300}) for number in range(60)]
    # Same user and source id as s1 (user u1), a later line but an earlier type.
    rows.append(event(1, type="ad_click", properties={"winner": True}))
    rows.append(event(4, type="zzz", properties={"winner": False}))
    monkeypatch.setattr(event_staging, "MAX_DOCUMENT_BYTES", 2_000)

    result = write(store, rows)

    assert (result.inserted, result.duplicates) == (60, 2)
    found = stored(store)
    assert found["s1"]["type"] == "ad_click" and found["s1"]["properties"] == {"winner": True}
    assert found["s4"]["type"] == "visit"
    assert len(list(event_staging.json_documents(rows))) > 1


def test_required_users_keep_only_known_users_events(store):
    write(store, [event(0)])  # creates u0
    rows = [event(3), event(4), event(5), event(6)]  # users u0, u1, u2, u0: u0 known

    result = write(store, rows, require_users=True)

    assert result.unknown_users == {"u1", "u2"}
    assert (result.inserted, result.duplicates) == (2, 0)
    assert set(stored(store)) == {"s0", "s3", "s6"}
