"""SQLite and PostgreSQL plan exactly the same decisions from the same data."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.planning.compile import load_ruleset
from engine.planning.runner import evaluate
from engine.store import open_store
from tests.conftest import make_settings, service_missing
from tests.planning.helpers import ingest

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai: the 11.11 slot


def shop(count: int):
    day = timedelta(days=1)
    users, events = [], []
    tiers = ["gold", "silver", "bronze", "platinum", None]
    for i in range(count):
        user = f"s{i:03d}"
        users.append(
            {
                "id": user,
                "member_tier": tiers[i % 5],
                "email": f"{user}@example.com" if i % 7 else None,
                "email_opt_in": i % 3 != 0,
                "ads_opt_in": i % 4 != 0,
            }
        )
        for n in range(i % 4):
            events.append(
                {
                    "user": user,
                    "type": "purchase",
                    "amount": 80 + 37 * (i % 11),
                    "at": (T - (5 + 31 * n + i % 120) * day).isoformat(),
                }
            )
        for n in range(i % 3):
            events.append(
                {"user": user, "type": "visit", "at": (T - (n + i % 40) * day).isoformat()}
            )
    return users, events


@pytest.mark.postgres
def test_same_data_same_decisions(postgres_server_url, sqlite_template, tmp_path):
    if postgres_server_url is None:
        service_missing("PostgreSQL is not reachable at NUDGE_TEST_POSTGRES_URL")
    from tests.conftest import _truncate_all

    _truncate_all(postgres_server_url)
    users, events = shop(150)
    results = {}
    for name in ("sqlite", "postgresql"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copytree(REPO / "rules", folder / "rules")
        url = postgres_server_url
        if name == "sqlite":
            shutil.copyfile(sqlite_template, folder / "nudge.db")
            url = f"sqlite:///{folder / 'nudge.db'}"
        settings = make_settings(folder, shop={"timezone": "Asia/Shanghai"}, database={"url": url})
        store = open_store(settings)
        try:
            ingest(store, folder, now=T, users=users, events=events)
            evaluate(store, load_ruleset(settings), at=T)
            with store.connect() as connection:
                results[name] = sorted(
                    connection.execute(
                        sa.text(
                            "SELECT rule_id, user_id, outcome, coalesce(reason, ''), "
                            "coalesce(variant, '') FROM decisions"
                        )
                    ).all()
                )
        finally:
            store.dispose()
    assert len(results["sqlite"]) > 50
    assert {row[0] for row in results["sqlite"]} >= {"double-eleven", "winback-lapsed-members"}
    assert results["sqlite"] == results["postgresql"]
    assert {row[2] for row in results["sqlite"]} >= {"planned", "held_out", "suppressed"}
