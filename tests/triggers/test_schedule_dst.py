"""Cron slots on DST days: each wall-clock time of the shop fires exactly once.

A daily slot fires once on both DST days; an hourly rule fires 23 times on the spring
day (02:00 does not exist) and 24 times on the autumn day (the repeated hour once).

Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00.
America/New_York: 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from cli import app
from engine.planning.runner import evaluate
from engine.scheduling import fire_times
from engine.triggers.schedule import due_slot, next_fire_times
from tests.conftest import make_settings
from tests.planning.helpers import ingest, ruleset_for, write_rule

# (zone, day, fires of an hourly rule that day)
DST_DAYS = [
    ("Europe/Berlin", date(2026, 3, 29), 23),
    ("Europe/Berlin", date(2026, 10, 25), 24),
    ("America/New_York", date(2026, 3, 8), 23),
    ("America/New_York", date(2026, 11, 1), 24),
]


def _local_day(zone: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
    return start, end


def _ticks(start: datetime, end: datetime, every: timedelta):
    at = start
    while at < end:
        yield at
        at += every


@pytest.mark.parametrize(("zone", "day", "hours"), DST_DAYS, ids=lambda v: str(v))
@pytest.mark.parametrize("expression", ["30 2 * * *", "30 1 * * *"])
def test_a_daily_slot_is_due_exactly_once_on_a_dst_day(zone, day, hours, expression):
    tz = ZoneInfo(zone)
    start, end = _local_day(tz, day)
    slots = {due_slot(expression, tz, at) for at in _ticks(start, end, timedelta(minutes=5))}
    slots.discard(None)
    assert len(slots) == 1, sorted(slots)
    assert len(list(fire_times(expression, tz, start, end))) == 1


@pytest.mark.parametrize(("zone", "day", "hours"), DST_DAYS, ids=lambda v: str(v))
def test_an_hourly_rule_fires_once_per_wall_clock_hour(zone, day, hours):
    tz = ZoneInfo(zone)
    start, end = _local_day(tz, day)
    before = timedelta(microseconds=1)
    fires = list(fire_times("0 * * * *", tz, start - before, end - before))
    assert len(fires) == hours
    # In UTC: two instants of one zone with the same wall time compare equal (PEP 495).
    slots = {due_slot("0 * * * *", tz, at) for at in _ticks(start, end, timedelta(minutes=5))}
    assert len({slot.astimezone(UTC) for slot in slots - {None}}) == hours


def test_check_lists_the_repeated_hour_once():
    berlin = ZoneInfo("Europe/Berlin")
    fires = next_fire_times("30 2 * * *", berlin, datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert [f.isoformat() for f in fires] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_a_skipped_slot_is_named_by_a_time_that_exists():
    berlin = ZoneInfo("Europe/Berlin")
    fires = next_fire_times("30 2 * * *", berlin, datetime(2026, 3, 28, 12, tzinfo=UTC), 1)
    assert [f.isoformat() for f in fires] == ["2026-03-29T03:30:00+02:00"]


BERLIN_RULES = {
    "nightly": 'trigger: {schedule: "30 2 * * *"}\nactions:\n  tag: {add: [nightly]}\n',
    "hourly": 'trigger: {schedule: "0 * * * *"}\nactions:\n  tag: {add: [hourly]}\n',
}


def test_ticks_through_the_autumn_night_plan_each_slot_once(store, tmp_path):
    """The reported hang: every tick of the repeated hour planned nothing at all."""
    settings = make_settings(
        store.settings.project_dir,
        shop={"timezone": "Europe/Berlin"},
        database={"url": store.settings.database.url},
    )
    from engine.store import open_store

    berlin_store = open_store(settings)
    try:
        for rule_id, text in BERLIN_RULES.items():
            write_rule(settings, rule_id, text)
        start, end = _local_day(ZoneInfo("Europe/Berlin"), date(2026, 10, 25))
        ingest(berlin_store, tmp_path, now=start, users=[{"id": "a"}])
        planned = {"nightly": 0, "hourly": 0}
        for at in _ticks(start, start + timedelta(hours=6), timedelta(minutes=15)):
            for outcome in evaluate(berlin_store, ruleset_for(settings), at=at).outcomes:
                assert outcome.status in ("done", "not_due", "already_claimed"), outcome.error
                planned[outcome.rule_id] += outcome.planned
    finally:
        berlin_store.dispose()
    # Six real hours from local midnight, five wall-clock hours: 00:00, 01:00, 02:00
    # (CEST; its repetition in CET fires nothing), 03:00, 04:00.
    assert planned == {"nightly": 1, "hourly": 5}


def test_dry_run_in_the_repeated_hour_returns(project_dir, monkeypatch):
    (project_dir / "nudge.toml").write_text('[shop]\ntimezone = "Europe/Berlin"\n')
    monkeypatch.chdir(project_dir)
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    (project_dir / "rules").mkdir()
    (project_dir / "rules" / "nightly.yaml").write_text(BERLIN_RULES["nightly"])

    result = runner.invoke(app, ["dry-run", "--at", "2026-10-25T01:45:00+00:00", "--json"])

    assert result.exit_code == 0, result.output
    assert '"status": "not_due"' in result.output


@pytest.mark.parametrize("expression", ["0,30 2 * * *", "*/20 2 * * *", "*/30 * * * *"])
def test_several_fires_in_the_repeated_hour_fire_once_each(expression):
    berlin = ZoneInfo("Europe/Berlin")
    start, end = _local_day(berlin, date(2026, 10, 25))
    fires = list(fire_times(expression, berlin, start, end))
    walls = [f.replace(tzinfo=None) for f in fires]
    assert len(walls) == len(set(walls))
    assert [w.strftime("%H:%M") for w in walls if w.hour == 2][:1] == ["02:00"]
