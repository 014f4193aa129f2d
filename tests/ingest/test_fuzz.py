"""Fuzzing the row validators: whatever a column holds, a row is stored or rejected.

The property behind "ingest never loses a file to one bad value": for any JSON-like
value in any column of a users or events record (huge integers, NaN and infinities,
odd Unicode including NUL and lone surrogates, nested objects, booleans, None),
`user_row` / `event_row` either return a row the database stores or raise
`RowError` (a reject with its reason), never anything else. The writer tests store
the accepted rows through the real bulk writer, so "the database stores it" is
checked by SQLite and PostgreSQL themselves.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.ingest import ingest_files
from engine.ingest.money import ShopCurrency
from engine.ingest.records import EVENT_KEYS, USER_KEYS, event_row, user_row
from engine.ingest.values import RowError
from engine.ingest.writers import BatchWriter
from engine.store.people import Event, User

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ZONES = st.sampled_from([ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York")])
SHOP = ShopCurrency(
    "CNY", {"USD": Decimal("7.1"), "JPY": Decimal("0.048"), "BTC": Decimal("481234.56789")}
)
events = Event.__table__
users = User.__table__

# Values chosen to reach every branch: numbers as text, times around DST and the ends
# of the calendar, codes, booleans, JSON text for CSV cells, odd characters.
TRICKY = st.sampled_from(
    [
        *("", " ", "\x00", "u1\x00", "\ud800", "é", "😀", "\u3000", "\x85", "\x1c"),
        *("NaN", "nan", "sNaN", "Infinity", "-inf", "1e30", "1e-30", "-0", "-0.00"),
        *("12.345", "0.1", "999999999999.99", "1000000000000", "1e9999999999999999999"),
        *("1_000", "١٢٣", "-5", "12.5", "7", "9" * 5000),
        *("2026-03-01T10:00:00Z", "2026-03-08T02:30:00", "2026-11-01 01:30:00", "2026-13-01"),
        *("9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59", "0001-01-01", "0001-01-01T00:00Z"),
        *("Asia/Shanghai", "Mars/Olympus", "../etc", "Asia", "CN", "cn", "ZZ", "EU"),
        *("USD", "usd", "EUR", "CNY", "BTC", "JPY", "US", "zh-CN", "en", "e"),
        *("yes", "No", "true", "1", "0", "maybe", "vip;wholesale", ";;", "a;" * 40),
        *('{"a": 1}', '{"a": NaN}', "[1]", '{"\\u0000": 1}', '{"a": "\\ud800"}', "{"),
        *('{"a": ' + "9" * 5000 + "}", "[" * 5000, '{"a": 1e400}'),
    ]
)
CHARACTERS = st.characters(exclude_categories=())  # NUL and lone surrogates included
TEXT = st.one_of(
    st.text(CHARACTERS, max_size=12),
    TRICKY,
    # Around every column length (3, 16, 32, 64, 128, 200, 320).
    st.integers(1, 330).map(lambda n: "x" * n),
)
# Up to 4000 digits: the most a parser hands over (json.loads refuses more than 4300).
HUGE_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**4000)])
NUMBERS = st.one_of(st.integers(), HUGE_INTS, st.floats(), st.floats(0, 1e13))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
DEEP = st.integers(20, 300).map(lambda depth: json.loads("[" * depth + "]" * depth))
ANYTHING = st.one_of(SCALARS, JSON, DEEP)

# Plausible values per column, edge cases included, so that a record usually gets past
# its first column; `record` then puts anything at all into one or two columns.
NAME = st.text(CHARACTERS, min_size=1, max_size=12)
TIME = st.one_of(
    st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda t: t.isoformat()),
    st.sampled_from(
        ["2026-03-08T02:30:00", "2026-11-01 01:30:00", "9999-12-31T23:59:59-05:00", "0001-01-01"]
    ),
)
OBJECT = st.dictionaries(TEXT, JSON, max_size=4)
CENTS = st.decimals(0, 10**13, places=2)
USER_COLUMNS = {
    "id": st.one_of(st.sampled_from(["u1", "u2", " u3 ", "李雷"]), NAME, st.integers()),
    "email": TEXT,
    "phone": st.one_of(TEXT, st.integers()),
    "name": TEXT,
    "country": st.sampled_from(["CN", "us", "ZZ", "USA"]),
    "timezone": st.sampled_from(["Asia/Shanghai", "UTC", "Mars/Olympus"]),
    "locale": st.sampled_from(["zh-CN", "en", "e", "zh_Hant_TW"]),
    "member_tier": TEXT,
    "member_since": TIME,
    "unsubscribed_at": TIME,
    "tags": st.one_of(st.lists(TEXT, max_size=3), TEXT),
    "attributes": st.one_of(OBJECT, OBJECT.map(json.dumps)),
    "email_opt_in": st.one_of(st.booleans(), st.sampled_from(["yes", "0", "maybe"])),
    "sms_opt_in": st.booleans(),
    "ads_opt_in": st.booleans(),
    "attributes.city": TEXT,
    "shoe_size": JSON,  # any other column is an attribute
}
EVENT_COLUMNS = {
    "user": st.one_of(st.sampled_from(["u1", "u2", "李雷"]), NAME, st.integers()),
    "user_id": NAME,
    "type": st.one_of(st.sampled_from(["visit", "purchase", "refund"]), NAME),
    "at": TIME,
    "occurred_at": TIME,
    "time": TIME,
    "event_id": st.one_of(NAME, st.integers()),
    "id": NAME,
    "amount": st.one_of(CENTS, CENTS.map(str), CENTS.map(float), NUMBERS, TRICKY),
    "currency": st.sampled_from(["CNY", "usd", "JPY", "BTC", "EUR"]),
    "order_id": st.one_of(TEXT, st.integers()),
    "coupon_code": TEXT,
    **{f"utm_{name}": TEXT for name in ("source", "medium", "campaign", "content", "term")},
    "properties": st.one_of(OBJECT, OBJECT.map(json.dumps)),
    "properties.sku": JSON,
    "page": JSON,  # any other column is a property
}
# Every column the validators know, so a new one cannot go unfuzzed.
assert USER_KEYS <= USER_COLUMNS.keys() and EVENT_KEYS <= EVENT_COLUMNS.keys()


@st.composite
def record(draw, columns: dict, required: tuple[str, ...]) -> dict:
    data = draw(
        st.fixed_dictionaries(
            {name: columns[name] for name in required},
            optional={k: v for k, v in columns.items() if k not in required},
        )
    )
    for name in draw(st.lists(st.sampled_from(sorted(columns)), max_size=2, unique=True)):
        data[name] = draw(ANYTHING)
    return data


USER_RECORD = record(USER_COLUMNS, ("id",))
EVENT_RECORD = record(EVENT_COLUMNS, ("user", "type", "at"))


def fuzz(max_examples: int) -> hsettings:
    # No deadline: a database round trip may be slow on a busy CI machine.
    return hsettings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def validated(make_row, records) -> list[dict]:
    """The rows validation accepts; anything but RowError fails the test."""
    rows = []
    for record in records:
        try:
            rows.append(make_row(record))
        except RowError as exc:
            assert str(exc)  # a reject always says why
    return rows


@fuzz(200)
@given(record=USER_RECORD, zone=ZONES)
def test_a_users_record_is_a_row_or_a_reject(record, zone):
    validated(lambda r: user_row(r, zone), [record])


@fuzz(200)
@given(record=EVENT_RECORD, zone=ZONES)
def test_an_events_record_is_a_row_or_a_reject(record, zone):
    for row in validated(lambda r: event_row(r, zone, SHOP), [record]):
        if row["amount"] is not None:
            assert row["currency"] == "CNY"
            assert (row["original_currency"] is None) == (row["original_amount"] is None)


def _empty(store) -> None:
    # Hypothesis runs many examples on one function-scoped store: start each empty.
    with store.begin() as connection:
        for table in ("user_tags", "profiles", "events", "users"):
            connection.execute(sa.text(f"DELETE FROM {table}"))


def _write(store, write) -> object:
    with store.engine.connect() as connection:
        writer = BatchWriter(connection, NOW)
        writer.create_temp_tables()
        try:
            with connection.begin():
                return write(writer)
        finally:
            with connection.begin():
                writer.drop_temp_tables()


@fuzz(40)
@given(records=st.lists(USER_RECORD, max_size=4), zone=ZONES)
def test_accepted_users_rows_are_stored_by_the_database(store, records, zone):
    _empty(store)
    rows = validated(lambda r: user_row(r, zone), records)

    _write(store, lambda writer: writer.write_users(rows))

    with store.connect() as connection:
        stored = set(connection.execute(sa.select(users.c.id)).scalars())
    assert stored == {row["id"] for row in rows}


EVENT_SCALARS = (
    "user_id",
    "source_id",
    "type",
    "occurred_at",
    "amount",
    "currency",
    "original_amount",
    "original_currency",
)


@fuzz(40)
@given(records=st.lists(EVENT_RECORD, max_size=4), zone=ZONES)
def test_accepted_events_rows_are_stored_by_the_database(store, records, zone):
    _empty(store)
    rows = validated(lambda r: event_row(r, zone, SHOP), records)
    expected = {tuple(row[c] for c in EVENT_SCALARS) for row in rows}

    result = _write(store, lambda writer: writer.write_events(rows, require_users=False))

    assert result.inserted + result.duplicates == len(rows)
    query = sa.select(*(events.c[c] for c in EVENT_SCALARS))
    with store.connect() as connection:
        stored = {tuple(row) for row in connection.execute(query)}
    # Each stored event is one of the validated rows, exactly (money, times, codes).
    assert stored <= expected
    assert len(stored) == result.inserted == len({(r["user_id"], r["source_id"]) for r in rows})


def _jsonl(records: list[dict]) -> str:
    # Written as a shop's exporter might: NaN, huge integers and lone surrogates come
    # out as lines the JSON reader refuses (malformed JSON, invalid UTF-8).
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)


def _csv(records: list[dict]) -> str:
    columns = sorted({key for record in records for key in record} | {"user", "type", "at"})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for record in records:
        writer.writerow([_cell(record.get(name)) for name in columns])
    return out.getvalue()


def _cell(value) -> str:
    # Anything but text goes into its CSV cell as JSON text (NaN included).
    if isinstance(value, str) or value is None:
        return value or ""
    return json.dumps(value, default=str)


@fuzz(15)
@given(records=st.lists(EVENT_RECORD, min_size=1, max_size=5), as_csv=st.booleans())
def test_a_fuzzed_file_is_ingested_row_by_row(store, tmp_path, records, as_csv):
    _empty(store)
    path = tmp_path / ("events.csv" if as_csv else "events.jsonl")
    text = _csv(records) if as_csv else _jsonl(records)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")

    report = ingest_files(store, [path], now=NOW, kind="events")

    # Every row read is stored, a duplicate, or a reject: none is lost with the file.
    stored = report.events_inserted + report.duplicates_skipped
    assert stored + report.rejected_count == report.rows_read
