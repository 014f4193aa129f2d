"""A steady tick that has nothing to do does (almost) nothing, and never misses work.

What the daemon's steady ticks remember or skip between ticks: the rules (reloaded
when a file changes), the stage refresh's horizon (the next instant a date crosses a
threshold), and event or follow-up occurrences already decided for good. Each test
changes one thing between two ticks and checks the next tick acts on it exactly as a
full evaluation would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.daemon import RuleCache, tick
from engine.planning.runner import evaluate
from engine.store.people import StageMembership, User
from engine.store.planning import OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
outbox = OutboxAction.__table__
memberships = StageMembership.__table__
users = User.__table__

THANKS = """\
trigger: {event: purchase}
when: event.amount >= 100
actions:
  tag: {add: [big]}
"""


def _steady(store, cache, at, previous):
    """What `engine.daemon._Daemon._tick` runs on a steady tick."""
    return tick(store, cache, at, changed_since=previous - 15 * MINUTE)


def _purchase(store, folder, user, at, amount, source_id):
    ingest(
        store,
        folder,
        now=at,
        events=[
            {
                "event_id": source_id,
                "user": user,
                "type": "purchase",
                "at": at.isoformat(),
                "amount": amount,
            }  # fmt: skip
        ],
    )


def _by_rule(evaluation):
    return {outcome.rule_id: outcome for outcome in evaluation.outcomes}


def test_an_edited_condition_is_used_at_the_next_tick(store, settings, tmp_path):
    path = write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=T - DAY, users=[{"id": "a"}, {"id": "b"}])
    cache = RuleCache()
    tick(store, cache, T)  # the daemon's start: a full sweep
    _purchase(store, tmp_path, "a", T + MINUTE, 50, "p1")

    first = _by_rule(_steady(store, cache, T + 2 * MINUTE, T))["thanks"]
    assert first.planned == 0 and first.matched == 0  # 50 < 100

    path.write_text(THANKS.replace(">= 100", ">= 10"), encoding="utf-8")
    _purchase(store, tmp_path, "b", T + 3 * MINUTE, 50, "p2")
    second = _by_rule(_steady(store, cache, T + 4 * MINUTE, T + 2 * MINUTE))["thanks"]

    # The edited rule is a new rule content: it plans both purchases of its window.
    assert second.planned == 2


def test_an_edited_action_parameter_is_in_the_next_ticks_payloads(store, settings, tmp_path):
    path = write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=T - DAY, users=[{"id": "a"}, {"id": "b"}])
    cache = RuleCache()
    tick(store, cache, T)
    _purchase(store, tmp_path, "a", T + MINUTE, 500, "p1")
    assert _by_rule(_steady(store, cache, T + 2 * MINUTE, T))["thanks"].planned == 1

    path.write_text(THANKS.replace("[big]", "[huge]"), encoding="utf-8")
    _purchase(store, tmp_path, "b", T + 3 * MINUTE, 500, "p2")
    assert _by_rule(_steady(store, cache, T + 4 * MINUTE, T + 2 * MINUTE))["thanks"].planned == 1

    with store.connect() as connection:
        rows = connection.execute(
            sa.select(outbox.c.user_id, outbox.c.payload).order_by(outbox.c.user_id)
        ).all()
    assert [(user, payload["params"]["add"]) for user, payload in rows] == [
        ("a", ["big"]),
        ("b", ["huge"]),
    ]


def test_decided_events_inside_the_lag_leave_the_rule_idle(store, settings, tmp_path):
    write_rule(settings, "thanks", THANKS)
    ingest(store, tmp_path, now=T - DAY, users=[{"id": "a"}])
    cache = RuleCache()
    tick(store, cache, T)
    _purchase(store, tmp_path, "a", T + MINUTE, 500, "p1")
    assert _by_rule(_steady(store, cache, T + 2 * MINUTE, T))["thanks"].planned == 1

    # The purchase is still inside CHANGE_LAG, but decided: nothing new.
    again = _by_rule(_steady(store, cache, T + 3 * MINUTE, T + 2 * MINUTE))["thanks"]
    assert (again.status, again.matched, again.run_id) == ("idle", 0, None)


def test_a_suppressed_event_is_planned_once_consent_arrives(store, settings, tmp_path):
    """A no_consent suppression is not final: the steady tick must not skip it."""
    write_rule(
        settings,
        "mail",
        "trigger: {event: purchase}\nactions:\n  email: {creative: thank-you}\n",
    )
    ingest(store, tmp_path, now=T - DAY, users=[{"id": "a", "email": "a@example.com"}])
    cache = RuleCache()
    tick(store, cache, T)
    _purchase(store, tmp_path, "a", T + MINUTE, 500, "p1")
    first = _by_rule(_steady(store, cache, T + 2 * MINUTE, T))["mail"]
    assert first.suppressed == {"no_consent": 1}

    with store.begin() as connection:
        connection.execute(users.update().values(email_opt_in=True))
    second = _by_rule(_steady(store, cache, T + 3 * MINUTE, T + 2 * MINUTE))["mail"]
    assert second.planned == 1


def _open_stage(store, user_id):
    with store.connect() as connection:
        return connection.execute(
            sa.select(memberships.c.stage).where(
                memberships.c.user_id == user_id, memberships.c.exited_at.is_(None)
            )
        ).scalar()


def test_a_stage_crossed_by_time_alone_is_recorded_by_a_steady_tick(store, settings, tmp_path):
    """The horizon: a steady tick skips the stage refresh only until the next crossing."""
    write_rule(
        settings, "tag-lapsed", "trigger: {stage: lapsed_member}\nactions:\n  tag: {add: [l]}\n"
    )
    bought = T - 90 * DAY + 3 * MINUTE  # lapses (more than 90 days) just after T + 3 min
    ingest(
        store,
        tmp_path,
        now=T - DAY,
        users=[{"id": "a", "member_since": (T - 200 * DAY).isoformat()}],
        events=[{"user": "a", "type": "purchase", "at": bought.isoformat(), "amount": 20}],
    )
    cache = RuleCache()
    tick(store, cache, T)
    quiet = _steady(store, cache, T + MINUTE, T)
    assert quiet.stage_entries == {} and _open_stage(store, "a") == "first_purchase"

    crossed = _steady(store, cache, T + 5 * MINUTE, T + MINUTE)

    assert crossed.stage_entries == {"lapsed_member": 1}
    assert _open_stage(store, "a") == "lapsed_member"
    assert _by_rule(crossed)["tag-lapsed"].planned == 1


def test_new_data_is_refreshed_by_the_next_steady_tick(store, settings, tmp_path):
    write_rule(
        settings, "tag-repeat", "trigger: {stage: repeat_buyer}\nactions:\n  tag: {add: [r]}\n"
    )
    ingest(
        store,
        tmp_path,
        now=T - DAY,
        users=[{"id": "a"}],
        events=[{"user": "a", "type": "purchase", "at": (T - DAY).isoformat(), "amount": 20}],
    )
    cache = RuleCache()
    tick(store, cache, T)
    assert _steady(store, cache, T + MINUTE, T).stage_entries == {}

    _purchase(store, tmp_path, "a", T + 2 * MINUTE, 20, "p2")
    refreshed = _steady(store, cache, T + 3 * MINUTE, T + MINUTE)

    assert refreshed.stage_entries == {"repeat_buyer": 1}
    assert _by_rule(refreshed)["tag-repeat"].planned == 1


def test_a_steady_tick_records_what_a_full_evaluation_would(store, settings, tmp_path):
    """Same data, one store evaluated by steady ticks, the answer checked against a
    dry-run full evaluation at each instant: the same stage entries."""
    write_rule(
        settings, "tag-lapsed", "trigger: {stage: lapsed_member}\nactions:\n  tag: {add: [l]}\n"
    )
    ingest(
        store,
        tmp_path,
        now=T - DAY,
        users=[{"id": f"u{i}", "member_since": (T - 300 * DAY).isoformat()} for i in range(6)],
        events=[
            {
                "user": f"u{i}",
                "type": "purchase",
                "amount": 20,
                # Half-minute offsets: a crossing exactly on a tick's instant is
                # recorded at neither tick (the incremental refresh's window is
                # (since, now] while a stage changes strictly after its threshold).
                "at": (T - 90 * DAY + (2 * i + 1.5) * MINUTE).isoformat(),
            }
            for i in range(6)
        ],
    )
    cache = RuleCache()
    tick(store, cache, T)
    previous = T
    for minute in range(1, 14):
        at = T + minute * MINUTE
        expected = evaluate(store, ruleset_for(settings), at=at, dry_run=True).stage_entries
        got = _steady(store, cache, at, previous).stage_entries
        assert got == expected, minute
        previous = at
    with store.connect() as connection:
        lapsed = connection.execute(
            sa.select(sa.func.count()).where(
                memberships.c.stage == "lapsed_member", memberships.c.exited_at.is_(None)
            )
        ).scalar()
    assert lapsed == 6


def test_an_idle_tick_compiles_nothing(store, settings, tmp_path):
    """Every statement of a steady idle tick comes from SQLAlchemy's compiled cache:
    a construct without a cache key would be compiled afresh at every tick."""
    from pathlib import Path

    from sqlalchemy.engine.default import CACHE_HIT

    shipped = Path(__file__).resolve().parents[2] / "rules"
    for path in shipped.glob("*.yaml"):
        write_rule(settings, path.stem, path.read_text(encoding="utf-8"))
    ingest(
        store,
        tmp_path,
        now=T - MINUTE,
        users=[{"id": "a", "email": "a@example.com", "email_opt_in": True}],
        events=[{"user": "a", "type": "purchase", "amount": 300, "at": (T - MINUTE).isoformat()}],
    )
    cache = RuleCache()
    tick(store, cache, T)
    for minute in (1, 2):  # the first steady ticks warm the cache
        _steady(store, cache, T + minute * MINUTE, T + (minute - 1) * MINUTE)
    compiled: list[tuple] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if context.compiled is not None and not statement.lstrip().upper().startswith(
            ("SAVEPOINT", "RELEASE", "ROLLBACK")
        ):
            compiled.append((context.cache_hit, statement[:60]))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        idle = _steady(store, cache, T + 3 * MINUTE, T + 2 * MINUTE)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)

    assert {outcome.status for outcome in idle.outcomes} <= {"idle", "not_due", "outside_flight"}
    assert compiled and [c for c in compiled if c[0] != CACHE_HIT] == []


def test_a_stage_crossed_exactly_at_a_refresh_instant_is_recorded_next_tick(
    store, settings, tmp_path
):
    """A stage changes strictly after its threshold: at the very instant of a refresh the
    user still keeps their stage, and the next refresh must look again."""
    bought = T - 90 * DAY + 2 * MINUTE  # exactly 90 days old at T + 2 min
    ingest(
        store,
        tmp_path,
        now=T - DAY,
        users=[{"id": "a", "member_since": (T - 200 * DAY).isoformat()}],
        events=[{"user": "a", "type": "purchase", "at": bought.isoformat(), "amount": 20}],
    )
    cache = RuleCache()
    tick(store, cache, T)
    _steady(store, cache, T + MINUTE, T)
    at_the_instant = _steady(store, cache, T + 2 * MINUTE, T + MINUTE)
    assert at_the_instant.stage_entries == {} and _open_stage(store, "a") == "first_purchase"

    after = _steady(store, cache, T + 3 * MINUTE, T + 2 * MINUTE)

    assert after.stage_entries == {"lapsed_member": 1}
    assert _open_stage(store, "a") == "lapsed_member"
