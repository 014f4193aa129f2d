"""Evaluation and dispatch on a Citus cluster beside one PostgreSQL (docs/scaling.md).

    NUDGE_TEST_CITUS_URL=postgresql+psycopg://...@coordinator/db .venv/bin/python bench/citus.py

Builds the same synthetic shop in both databases (their Nudge tables are dropped and
recreated), distributes the Citus one, then times one full evaluation and one
dispatch pass on each. Exits with a message when NUDGE_TEST_CITUS_URL is not set.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

USERS = int(os.environ.get("NUDGE_BENCH_USERS", "20000"))
T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
RULE = "trigger: {event: purchase}\nwhen: event.amount >= 100\nactions:\n  tag: {add: [big]}\n"


def _run(url: str, distributed: bool) -> dict[str, float]:
    import sqlalchemy as sa

    from engine.delivery.runner import run_dispatcher
    from engine.planning.runner import evaluate
    from engine.store import Store
    from engine.store.database import create_engine_for
    from engine.store.distribute import distribute
    from engine.store.migrations import upgrade
    from engine.store.tables import metadata
    from tests.conftest import make_settings
    from tests.planning.helpers import ingest, ruleset_for, write_rule

    engine = create_engine_for(url)
    with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    folder = Path(tempfile.mkdtemp())
    settings = make_settings(folder, shop={"timezone": "Asia/Shanghai"}, database={"url": url})
    store = Store(engine=create_engine_for(url), settings=settings)
    upgrade(store)
    if distributed:
        distribute(store)
    write_rule(settings, "big", RULE)
    ids = [f"u{n:07d}" for n in range(USERS)]
    at = (T - timedelta(hours=1)).isoformat()
    events = [
        {"event_id": f"p{u}", "user": u, "type": "purchase", "at": at, "amount": 150} for u in ids
    ]
    ingest(store, folder, now=T, users=[{"id": u} for u in ids], events=events)
    started = time.perf_counter()
    evaluate(store, ruleset_for(settings), at=T)
    evaluated = time.perf_counter() - started
    started = time.perf_counter()
    run_dispatcher(store, once=True, at=T + timedelta(minutes=5))
    dispatched = time.perf_counter() - started
    store.dispose()
    return {"evaluate_s": evaluated, "dispatch_s": dispatched}


def main() -> int:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__.strip())
        print("\nEnvironment: NUDGE_TEST_CITUS_URL (required), NUDGE_TEST_POSTGRES_URL (optional,")
        print("for comparison), NUDGE_BENCH_USERS (default 20000). No options.")
        return 0
    citus = os.environ.get("NUDGE_TEST_CITUS_URL")
    if not citus:
        print("NUDGE_TEST_CITUS_URL is not set: no Citus cluster to measure", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    results = {"citus": _run(citus, distributed=True)}
    plain = os.environ.get("NUDGE_TEST_POSTGRES_URL")
    if plain:
        results["postgresql"] = _run(plain, distributed=False)
    for name, figures in results.items():
        print(f"{name:12} {USERS} users: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
