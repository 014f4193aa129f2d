"""Against a real Citus cluster: only when NUDGE_TEST_CITUS_URL names its coordinator.

The URL's database must have the citus extension available and the coordinator in
its node list (`citus_set_coordinator_host`). Citus does not propagate CREATE DATABASE:
the same database must exist on every worker with `CREATE EXTENSION citus` run in it,
and the workers must be added (`citus_add_node`) from that database on the coordinator.
The tests create no database; they drop and recreate Nudge's tables in this one.
Without the variable they skip (CI has no Citus; this is not a service the suite
requires, so never `service_missing`).
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest

from engine.delivery.runner import run_dispatcher
from engine.lifecycle import refresh_stages, stage_history
from engine.planning.runner import evaluate
from engine.store.database import create_engine_for
from engine.store.distribute import current_placements, distribute
from engine.store.migrations import upgrade
from engine.store.tables import metadata
from tests.conftest import make_settings
from tests.planning.helpers import ingest, ruleset_for, write_rule

CITUS_URL = os.environ.get("NUDGE_TEST_CITUS_URL")
T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
RULE = """\
trigger: {event: purchase}
when: event.amount >= 100
actions:
  coupon: {value: 10, currency: CNY, expires_in: 7d}
  tag: {add: [big]}
"""


@pytest.fixture
def citus_store(project_dir):
    if not CITUS_URL:
        pytest.skip("NUDGE_TEST_CITUS_URL is not set (no Citus cluster to test against)")
    engine = create_engine_for(CITUS_URL)
    with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}" CASCADE')
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()
    settings = make_settings(
        project_dir,
        shop={"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"},
        database={"url": CITUS_URL},
    )
    from engine.store import Store

    store = Store(engine=create_engine_for(CITUS_URL), settings=settings)
    upgrade(store)
    distribute(store)
    try:
        yield store
    finally:
        store.dispose()


def _shop(store, tmp_path, users: int = 20):
    write_rule(store.settings, "big-spender", RULE)
    bought = (T - timedelta(hours=1)).isoformat()
    ids = [f"u{n:03d}" for n in range(users)]
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": u} for u in ids],
        events=[
            {"event_id": f"p-{u}", "user": u, "type": "purchase", "at": bought, "amount": 150}
            for u in ids
        ],
    )
    return ids


def test_distribute_places_every_table_and_is_idempotent(citus_store):
    with citus_store.engine.connect() as connection:
        placed = current_placements(connection)
    assert placed == {t.name: t.info["citus"] for t in metadata.sorted_tables}
    again = distribute(citus_store)
    assert again.placed == [] and len(again.already) == len(metadata.sorted_tables)
    before, after = upgrade(citus_store)
    assert before == after


def test_evaluate_and_dispatch_on_the_cluster(citus_store, tmp_path):
    ids = _shop(citus_store, tmp_path)
    evaluation = evaluate(citus_store, ruleset_for(citus_store.settings), at=T)
    assert sum(o.planned for o in evaluation.outcomes) == len(ids)
    report = run_dispatcher(citus_store, once=True, at=T + timedelta(minutes=5))
    assert report.outcomes == {"sent": 2 * len(ids)}
    with citus_store.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM coupon_codes").scalar() == len(ids)


def test_two_dispatchers_claim_disjoint_work(citus_store, tmp_path):
    ids = _shop(citus_store, tmp_path, users=60)
    evaluate(citus_store, ruleset_for(citus_store.settings), at=T)
    reports = []

    def dispatcher():
        reports.append(run_dispatcher(citus_store, once=True, at=T + timedelta(minutes=5)))

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with citus_store.engine.connect() as connection:
        states = connection.exec_driver_sql(
            "SELECT state, count(*) FROM outbox GROUP BY state"
        ).all()
        attempts = connection.exec_driver_sql(
            "SELECT outbox_id FROM delivery_attempts WHERE outcome = 'sent' "
            "GROUP BY outbox_id HAVING count(*) > 1"
        ).all()
    assert dict(states) == {"sent": 2 * len(ids)}
    assert attempts == []


def test_at_most_once_under_concurrent_evaluation(citus_store, tmp_path):
    ids = _shop(citus_store, tmp_path, users=40)
    ruleset = ruleset_for(citus_store.settings)
    threads = [
        threading.Thread(target=evaluate, args=(citus_store, ruleset), kwargs={"at": T})
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with citus_store.engine.connect() as connection:
        decided = connection.exec_driver_sql(
            "SELECT rule_id, user_id, occurrence_key, count(*) FROM decisions "
            "GROUP BY rule_id, user_id, occurrence_key"
        ).all()
        actions = connection.exec_driver_sql("SELECT count(*) FROM outbox").scalar()
    assert len(decided) == len(ids) and {row[3] for row in decided} == {1}
    assert actions == 2 * len(ids)


def test_redemption_of_unknown_codes_on_the_cluster(citus_store, tmp_path):
    # No rule fires here: this exercises ingest's redemption path (codes resolved
    # through coupon_codes, refusals explained without a cross-shard join).
    bought = (T - timedelta(hours=1)).isoformat()
    ids = [f"u{n:03d}" for n in range(6)]
    ingest(
        citus_store,
        tmp_path,
        now=T,
        users=[{"id": u} for u in ids],
        events=[
            {
                "event_id": f"p-{u}",
                "user": u,
                "type": "purchase",
                "at": bought,
                "amount": 50,
                "coupon_code": f"NOPE-{u}",
            }
            for u in ids
        ],
    )
    with citus_store.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT outcome, detail FROM coupon_redemptions ORDER BY user_id"
        ).all()
    assert [row[0] for row in rows] == ["unknown"] * len(ids)
    assert rows[0][1] == "no coupon has the code NOPE-u000"


def test_a_churned_shopper_who_comes_back_on_the_cluster(citus_store, tmp_path):
    # The stage refresh's "returned at" instant, computed on a cluster by a join with
    # per-user first events instead of a correlated subquery: the same history as on
    # a single PostgreSQL (tests/lifecycle/test_churn.py).
    day = timedelta(days=1)
    ingest(
        citus_store,
        tmp_path,
        now=T,
        users=[{"id": "buyer", "member_since": (T - 700 * day).isoformat()}, {"id": "stay"}],
        events=[
            {"user": "buyer", "type": "purchase", "at": (T - 500 * day).isoformat(), "amount": 80},
            {"user": "stay", "type": "visit", "at": (T - 500 * day).isoformat()},
        ],
    )
    with citus_store.engine.begin() as connection:
        refresh_stages(connection, citus_store.settings, T)
    back = T + day
    ingest(
        citus_store,
        tmp_path,
        now=back,
        events=[{"user": "buyer", "type": "visit", "at": (back - timedelta(hours=1)).isoformat()}],
    )
    with citus_store.engine.begin() as connection:
        refresh_stages(connection, citus_store.settings, back)
    with citus_store.engine.connect() as connection:
        buyer = [
            (r["stage"], r["entered_at"], r["exited_at"])
            for r in stage_history(connection, "buyer")
        ]
        stay = [(r["stage"], r["exited_at"]) for r in stage_history(connection, "stay")]
    churned_at = T - 500 * day + 365 * day
    assert buyer == [
        ("churned", churned_at, back - timedelta(hours=1)),
        ("lapsed_member", back - timedelta(hours=1), None),
    ]
    assert stay == [("churned", None)]
