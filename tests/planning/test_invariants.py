"""DESIGN invariants 1, 3, 4, 5 and 6, proved on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.planning.assignment import bucket, variant_for_bucket
from engine.planning.runner import evaluate
from engine.store import open_store
from engine.store.tables import metadata
from tests.planning.helpers import WINBACK, ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def lapsed_shop(store, tmp_path, count=60):
    users = [
        {
            "id": f"u{i}",
            "member_tier": ["gold", "silver", "bronze"][i % 3],
            "email": f"u{i}@example.com",
            "email_opt_in": i % 5 != 0,
        }
        for i in range(count)
    ]
    events = [
        {
            "user": f"u{i}",
            "type": "purchase",
            "at": (T - timedelta(days=95 + i % 7)).isoformat(),
            "amount": 150 + 10 * i,
        }
        for i in range(count)
    ]
    ingest(store, tmp_path, now=T, users=users, events=events)


def row_counts(store) -> dict[str, int]:
    with store.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            for table in metadata.sorted_tables
        }


def decisions(store, rule_id="winback"):
    with store.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT user_id, outcome, reason, variant FROM decisions WHERE rule_id = :r"),
            {"r": rule_id},
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_dry_run_writes_nothing_and_equals_the_run(store, settings, tmp_path):
    write_rule(settings, "winback", WINBACK)
    lapsed_shop(store, tmp_path)
    ruleset = ruleset_for(settings)
    before = row_counts(store)

    dry = evaluate(store, ruleset, at=T, dry_run=True).outcomes[0]

    assert row_counts(store) == before
    real = evaluate(store, ruleset, at=T).outcomes[0]
    assert dry.status == real.status == "done"
    for field in ("planned", "held_out", "suppressed", "variants", "actions"):
        assert getattr(dry, field) == getattr(real, field), field
    assert dry.samples == real.samples
    assert real.planned > 0 and real.suppressed == {"no_consent": dry.suppressed["no_consent"]}


def test_at_most_once_across_runs(store, settings, tmp_path):
    write_rule(settings, "winback", WINBACK)
    lapsed_shop(store, tmp_path)
    ruleset = ruleset_for(settings)

    first = evaluate(store, ruleset, at=T).outcomes[0]
    same_slot = evaluate(store, ruleset, at=T).outcomes[0]
    later = evaluate(store, ruleset, at=T + timedelta(hours=1)).outcomes[0]

    assert first.planned > 0
    assert same_slot.status == "already_claimed"
    assert later.planned == 0 and later.held_out == 0
    with store.connect() as connection:
        duplicates = connection.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT user_id, kind FROM outbox "
                "GROUP BY user_id, kind HAVING count(*) > 1) AS d"
            )
        ).scalar()
        planned_rows = connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar()
    assert duplicates == 0
    assert planned_rows == first.planned * 2  # coupon + email


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_concurrent_evaluations_plan_once(store, settings, tmp_path):
    """Two daemons on one PostgreSQL evaluating the same rule and slot plan once."""
    write_rule(settings, "winback", WINBACK)
    lapsed_shop(store, tmp_path, count=300)
    ruleset = ruleset_for(settings)
    results = []
    barrier = threading.Barrier(2)

    def daemon():
        own = open_store(settings)
        barrier.wait()
        results.append(evaluate(own, ruleset, at=T).outcomes[0])
        own.dispose()

    threads = [threading.Thread(target=daemon) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(result.status for result in results)
    assert statuses == ["already_claimed", "done"]
    planned = next(result.planned for result in results if result.status == "done")
    with store.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar() == planned * 2


def test_assignment_is_deterministic_and_matches_python(store, settings, tmp_path):
    write_rule(settings, "winback", WINBACK)
    lapsed_shop(store, tmp_path, count=90)
    evaluate(store, ruleset_for(settings), at=T)
    salt = settings.rules.assignment_salt
    weights = {"standard": 1, "bigger-coupon": 1}
    for user_id, (outcome, _reason, variant) in decisions(store).items():
        if outcome == "suppressed":
            continue
        held = bucket(user_id, "winback", salt, "holdout") < 1000
        assert (outcome == "held_out") == held, user_id
        expected = variant_for_bucket(bucket(user_id, "winback", salt, "variant"), weights)
        # The control group is compared against all variants: it has none.
        assert variant == (None if held else expected), user_id


def test_evaluation_in_the_past_ignores_later_events(store, settings, tmp_path):
    write_rule(
        settings,
        "big-spenders",
        "trigger: {schedule: '0 10 * * *'}\nwhen: total_spent >= 500\n"
        "actions:\n  tag: {add: [big]}\n",
    )
    early = T - timedelta(days=10)
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "a"}, {"id": "b"}],
        events=[
            {
                "user": "a",
                "type": "purchase",
                "at": (early - timedelta(days=1)).isoformat(),
                "amount": 600,
            },
            {
                "user": "b",
                "type": "purchase",
                "at": (early - timedelta(days=1)).isoformat(),
                "amount": 100,
            },
            {
                "user": "b",
                "type": "purchase",
                "at": (early + timedelta(days=1)).isoformat(),
                "amount": 900,
            },
        ],
    )
    ruleset = ruleset_for(settings)
    slot_then = datetime(2026, 11, 10, 10, 0, tzinfo=settings.tz)
    slot_now = datetime(2026, 11, 20, 10, 0, tzinfo=settings.tz)

    then = evaluate(store, ruleset, at=slot_then, dry_run=True).outcomes[0]
    now = evaluate(store, ruleset, at=slot_now, dry_run=True).outcomes[0]

    assert [s["user"] for s in then.samples] == ["a"]
    assert [s["user"] for s in now.samples] == ["a", "b"]


def test_a_broken_rule_never_stops_the_others(store, settings, tmp_path):
    write_rule(settings, "winback", WINBACK)
    write_rule(settings, "broken", "trigger: {stage: lapsd_member}\nactions: {tag: {add: [x]}}\n")
    write_rule(
        settings, "bad-condition", WINBACK.replace("total_spent >= 200", "total_spnt >= 200")
    )
    lapsed_shop(store, tmp_path)
    from engine.planning.compile import load_ruleset

    ruleset = load_ruleset(settings)
    rendered = "\n".join(d.render() for d in ruleset.errors)
    assert "unknown stage 'lapsd_member' (did you mean 'lapsed_member'?)" in rendered
    assert "unknown field 'total_spnt' (did you mean 'total_spent'?)" in rendered
    assert set(ruleset.rules) == {"winback"}
    outcome = evaluate(store, ruleset, at=T).outcomes
    assert [o.rule_id for o in outcome] == ["winback"] and outcome[0].planned > 0
