# ruff: noqa: DTZ001 -- naive wall-clock times are what these functions take.
"""engine.localtime: the one home of shop-local time -> UTC, pinned on DST days.

Europe/Berlin springs forward 2026-03-29 02:00 -> 03:00 (02:30 never happens) and
falls back 2026-10-25 03:00 -> 02:00 (02:30 happens twice). Every caller (ingest,
--at, flights, offers, send windows) goes through these functions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.errors import NudgeError
from engine.ingest.values import RowError, instant
from engine.localtime import (
    NonexistentTimeError,
    day_end,
    day_start,
    first_instant_at_or_after,
    wall_to_utc,
)
from engine.planning.timeparse import parse_instant
from engine.rules.models import Flight

BERLIN = ZoneInfo("Europe/Berlin")
# Chile moved its clocks at midnight: 2026-09-06 00:00 does not exist in Santiago.
SANTIAGO = ZoneInfo("America/Santiago")


def test_an_ordinary_time_is_read_in_the_zone():
    assert wall_to_utc(datetime(2026, 7, 1, 12, 0), BERLIN) == datetime(
        2026, 7, 1, 10, 0, tzinfo=UTC
    )


def test_the_gap_is_refused():
    with pytest.raises(NonexistentTimeError, match="does not exist in Europe/Berlin"):
        wall_to_utc(datetime(2026, 3, 29, 2, 30), BERLIN)


def test_the_fold_is_the_first_occurrence():
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert wall_to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == first


def test_an_aware_time_keeps_its_offset():
    aware = datetime(2026, 3, 29, 2, 30, tzinfo=UTC)
    assert wall_to_utc(aware, BERLIN) == aware


def test_a_start_inside_the_gap_starts_when_the_clocks_resume():
    assert first_instant_at_or_after(datetime(2026, 3, 29, 2, 30), BERLIN) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )  # 03:00 CEST


def test_days_start_after_a_midnight_gap():
    start = day_start(date(2026, 9, 6), SANTIAGO)
    assert start.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 9, 6, 1, 0)
    assert day_end(date(2026, 9, 5), SANTIAGO) == start


def test_every_caller_agrees_on_the_gap_and_the_fold():
    gap, fold = "2026-03-29T02:30", "2026-10-25T02:30"
    with pytest.raises(RowError, match="does not exist"):
        instant(gap, "at", BERLIN)
    with pytest.raises(NudgeError, match="does not exist"):
        parse_instant(gap, BERLIN)
    expected = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert instant(fold, "at", BERLIN) == expected
    assert parse_instant(fold, BERLIN) == expected
    # A flight is a span, not a reading: one starting in the gap starts at 03:00.
    flight = Flight(start=datetime(2026, 3, 29, 2, 30), end=date(2026, 10, 25))
    start, end = flight.bounds(BERLIN)
    assert start == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert end == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)  # midnight CET after the last day
