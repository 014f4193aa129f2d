"""Value parsers and the hand-converted SQLite insert path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import sqlite

from engine.ingest import values
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
