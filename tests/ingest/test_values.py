"""Value parsers and the hand-converted SQLite insert path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import sqlite

from engine.ingest import values
from engine.ingest.money import ShopCurrency
from engine.ingest.values import RowError
from engine.ingest.writers import sqlite_instant
from engine.store.people import Event


@pytest.mark.parametrize(
    "instant",
    [
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, 23, 59, tzinfo=timezone(timedelta(hours=8))),
    ],
)
def test_sqlite_instant_is_what_the_column_type_stores(instant):
    dialect = sqlite.dialect()
    process = Event.__table__.c.occurred_at.type.dialect_impl(dialect).bind_processor(dialect)
    stored = Event.__table__.c.occurred_at.type.process_bind_param(instant, dialect)
    assert sqlite_instant(instant) == (process(instant) if process else stored.isoformat(" "))


@pytest.mark.parametrize(
    ("given", "expected"),
    [("YES", True), ("no", False), ("1", True), ("0", False), (True, True), (0, False)],
)
def test_booleans(given, expected):
    assert values.boolean(given, "email_opt_in") is expected


def test_amounts():
    assert values.amount("12.5") == Decimal("12.50")
    assert values.amount(3) == Decimal("3.00")
    with pytest.raises(RowError, match="must not be negative"):
        values.amount("-0.01")
    with pytest.raises(RowError, match="not a finite number"):
        values.amount("NaN")


def test_ambiguous_local_time_is_the_first_occurrence():
    zone = ZoneInfo("America/New_York")
    assert values.instant("2026-11-01T01:30:00", "at", zone) == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("1000000000000000000000000000", "amount '1000000000000000000000000000' is out of range"),
        ("1e30", "amount '1e30' is out of range (at most 999999999999.99)"),
        (1e30, "amount 1e+30 is out of range"),
        (10**40, "amount 10000000000000000000000000000000000000000 is out of range"),
        ("1000000000000", "amount '1000000000000' is out of range"),
        ("1e9999999999999999999", "amount is not a number: '1e9999999999999999999'"),
        ("Infinity", "amount is not a finite number: 'Infinity'"),
        (-(10**4000), "amount must not be negative, got an integer of more than 60 digits"),
        (True, "amount must be a number, got a boolean"),
    ],
)
def test_amounts_out_of_range_are_rejected_before_conversion(given, reason):
    with pytest.raises(RowError) as error:
        values.amount(given)
    assert str(error.value).startswith(reason)


def test_amount_limits_and_zero():
    assert values.amount("999999999999.99") == Decimal("999999999999.99")
    assert str(values.amount("-0")) == "0.00"  # not -0.00


def test_text_the_databases_cannot_store_is_rejected():
    with pytest.raises(RowError, match=r"^name contains a NUL character \(U\+0000\)"):
        values.text("a\x00b", "name", 200)
    with pytest.raises(RowError, match=r"^name contains invalid Unicode \(a lone surrogate\)"):
        values.text("a\ud800", "name", 200)
    with pytest.raises(RowError, match=r"^id is longer than 128 characters"):
        values.text(10**5000, "id", 128)  # never str() of it: Python refuses past 4300 digits
    with pytest.raises(RowError, match=r"^id must be a string, got the number 1e\+29"):
        values.text(1e29, "id", 128)  # what orjson makes of a 30-digit integer
    assert values.text(12345, "order_id", 128) == "12345"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"a": float("nan")}, "properties.a: numbers must be finite, got nan"),
        ({"a": [1, float("inf")]}, "properties.a[1]: numbers must be finite, got inf"),
        ({"a": {"b": 2**64}}, "properties.a.b: integers must fit in 64 bits"),
        ({"a": "x\x00"}, "properties.a: contains a NUL character"),
        ({"\x00": 1}, r"properties: key '\x00' contains a NUL character"),
        ({"a": b"x"}, "properties.a: bytes is not a JSON value"),
        ({"a": json.loads("[" * 40 + "]" * 40)}, "properties.a" + "[0]" * 31 + ": nested more"),
    ],
)
def test_json_documents_the_databases_cannot_store_are_rejected(document, reason):
    with pytest.raises(RowError) as error:
        values.json_document(document, "properties")
    assert str(error.value).startswith(reason)


def test_a_good_json_document_is_returned_as_is():
    document = {"a": [1, 2.5, None, True, "李"], "b": {"c": 2**63 - 1}}
    assert values.json_document(document, "attributes") is document


def test_amounts_in_another_currency_are_converted_half_even():
    shop = ShopCurrency("CNY", {"USD": Decimal("7.1")})
    assert shop.convert(Decimal("0.35"), "USD") == Decimal("2.48")  # 2.485: the tie goes even
    assert shop.convert(Decimal("0.45"), "USD") == Decimal("3.20")  # 3.195: up to even
    assert shop.convert(Decimal("12.00"), "CNY") == Decimal("12.00")
    with pytest.raises(RowError) as error:
        shop.convert(Decimal("1.00"), "EUR")
    assert str(error.value) == (
        "no exchange rate for EUR: add it to nudge.toml as [currency] rates = {EUR = N}, "
        "where 1 EUR = N CNY"
    )
