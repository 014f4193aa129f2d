"""Schedules after downtime: one catch-up within misfire_grace, older slots missed.

A cron slot used to be planned only if a tick saw it within the hour after it: a
daemon down for more than an hour, or ticking every two hours, silently skipped it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.planning.pipeline import prune_runs
from engine.planning.runner import evaluate
from engine.store.planning import Run
from tests.planning.helpers import ingest, ruleset_for, write_rule

# 10:00 in Asia/Shanghai (the test shop's zone) is 02:00 UTC.
DAY1 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
DAILY = 'trigger: {schedule: "0 10 * * *"}\nactions:\n  tag: {add: [daily]}\n'


def runs_of(store) -> list[tuple[str, str, dict]]:
    r = Run.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(r.c.slot, r.c.status, r.c.counts).order_by(r.c.id))
        return [tuple(row) for row in rows]


def tick(store, settings, at):
    return evaluate(store, ruleset_for(settings), at=at).outcomes[0]


def test_a_slot_slept_through_runs_once_when_the_daemon_is_back(store, settings, tmp_path):
    write_rule(settings, "daily", DAILY)
    ingest(store, tmp_path, now=DAY1, users=[{"id": "a"}])
    assert tick(store, settings, DAY1 + timedelta(seconds=30)).planned == 1

    # Down from 10:01 until 13:00 the next day: the 10:00 slot is 3 hours old.
    back = tick(store, settings, DAY1 + DAY + 3 * HOUR)
    again = tick(store, settings, DAY1 + DAY + 3 * HOUR + timedelta(minutes=1))

    assert (back.status, back.planned, back.slot) == ("done", 1, "2026-11-21T10:00:00+08:00")
    assert again.status == "not_due"


def test_slots_older_than_misfire_grace_are_recorded_as_missed(store, settings, tmp_path):
    write_rule(settings, "daily", DAILY)
    ingest(store, tmp_path, now=DAY1, users=[{"id": "a"}])
    tick(store, settings, DAY1 + timedelta(seconds=30))

    # Back at 18:00 two days later: the 10:00 slots of both days are over 6h old.
    late = tick(store, settings, DAY1 + 2 * DAY + 8 * HOUR)
    later = tick(store, settings, DAY1 + 2 * DAY + 8 * HOUR + timedelta(minutes=1))

    assert (late.status, late.planned, late.missed) == ("not_due", 0, 2)
    assert later.missed == 0
    # Named by the last slot missed, so daemons catching up at other instants agree.
    assert runs_of(store)[-1] == (
        "missed:2026-11-22T10:00:00+08:00",
        "missed",
        {"missed": 2, "through": "2026-11-22T10:00:00+08:00"},
    )
    # The next morning's slot runs as usual.
    assert tick(store, settings, DAY1 + 3 * DAY).planned == 1


def test_a_slow_tick_coalesces_without_a_burst(store, settings, tmp_path):
    write_rule(
        settings, "hourly", 'trigger: {schedule: "0 * * * *"}\nactions:\n  tag: {add: [h]}\n'
    )
    ingest(store, tmp_path, now=DAY1, users=[{"id": "a"}])
    first = tick(store, settings, DAY1)
    # --tick-seconds 7200: every tick finds two slots, runs the latest once.
    second = tick(store, settings, DAY1 + 2 * HOUR)

    assert (first.planned, second.planned, second.coalesced) == (1, 1, 1)
    assert second.slot == "2026-11-20T12:00:00+08:00"


def test_a_new_rule_does_not_fire_a_slot_from_this_morning(store, settings, tmp_path):
    write_rule(settings, "daily", DAILY)
    ingest(store, tmp_path, now=DAY1, users=[{"id": "a"}])
    assert tick(store, settings, DAY1 + 3 * HOUR).status == "not_due"


def test_idle_ticks_leave_no_runs_and_old_empty_runs_are_pruned(store, settings, tmp_path):
    write_rule(
        settings, "thanks", "trigger: {event: purchase}\nactions:\n  tag: {add: [thanked]}\n"
    )
    ingest(
        store,
        tmp_path,
        now=DAY1,
        users=[{"id": "a"}],
        events=[{"user": "a", "type": "purchase", "at": DAY1.isoformat(), "amount": 5}],
    )
    for minute in range(1, 11):
        tick(store, settings, DAY1 + minute * timedelta(minutes=1))
    assert [status for _, status, _ in runs_of(store)] == ["done"]  # the one that planned

    # A daily slot is its own claim, kept even when it decides nothing...
    write_rule(settings, "daily", DAILY.replace("actions:", "once: per_user\nactions:"))
    for day in range(3):
        evaluate(store, ruleset_for(settings), at=DAY1 + day * DAY + timedelta(seconds=1))
    assert len(runs_of(store)) == 4
    # ...until it is old: the second day's decided nothing and is not the latest.
    with store.begin() as connection:
        assert prune_runs(connection, before=DAY1 + DAY) == 0
        assert prune_runs(connection, before=DAY1 + 40 * DAY) == 1
    assert [slot for slot, _, _ in runs_of(store)][1:] == [
        "2026-11-20T10:00:00+08:00",
        "2026-11-22T10:00:00+08:00",
    ]
