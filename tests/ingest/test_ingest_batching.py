"""Several batches of a file share one write transaction; each commits consistent.

A transaction holds up to TRANSACTION_BATCHES batches (or TRANSACTION_SECONDS): the
profiles, stage flags and unsubscribes of its users are written once when it ends. What
any other connection can see at a commit is whole: every stored event is in its user's
profile, and an error part-way through a transaction leaves nothing of it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.ingest import ingest_files, pipeline
from engine.ingest.writers import BatchWriter
from engine.store.people import Event, User
from engine.store.profiles import PROFILE_COLUMNS, profile_aggregates, profiles

NOW = datetime(2026, 6, 1, tzinfo=UTC)
START = datetime(2026, 1, 1, tzinfo=UTC)
events = Event.__table__
users = User.__table__


def _events(count: int, users_count: int = 3) -> list[dict]:
    return [
        {
            "user": f"u{number % users_count}",
            "type": "purchase" if number % 4 == 0 else "visit",
            "at": (START + timedelta(hours=number * 7 % 50)).isoformat(),
            "amount": f"{number}.25",
            "id": f"e{number}",
        }
        for number in range(count)
    ]


def _write(path, items) -> None:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


def _profiles(connection: sa.Connection) -> tuple[list[tuple], list[tuple]]:
    """(maintained, recomputed) profiles, as seen on this connection."""
    columns = [profiles.c.user_id, *(profiles.c[name] for name in PROFILE_COLUMNS)]
    maintained = connection.execute(sa.select(*columns).order_by(profiles.c.user_id)).all()
    query = profile_aggregates().subquery()
    columns = [query.c.user_id, *(query.c[name] for name in PROFILE_COLUMNS)]
    recomputed = connection.execute(sa.select(*columns).order_by(query.c.user_id)).all()
    return [tuple(row) for row in maintained], [tuple(row) for row in recomputed]


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 2 rows, transactions of 3 batches, no time bound."""
    monkeypatch.setattr(pipeline, "BATCH_SIZE", 2)
    monkeypatch.setattr(pipeline, "FIRST_BATCH_SIZE", 2)
    # raising=False: these tests were written (and failed) before the settings existed.
    monkeypatch.setattr(
        pipeline, "TRANSACTION_BATCHES", {"sqlite": 3, "postgresql": 3}, raising=False
    )
    seconds = {"sqlite": 1e9, "postgresql": 1e9}
    monkeypatch.setattr(pipeline, "TRANSACTION_SECONDS", seconds, raising=False)


@pytest.fixture
def commits(monkeypatch) -> list[tuple[int, bool]]:
    """(events stored, profiles == recomputation) inside each transaction, at its commit
    (`signal_change` is its last statement)."""
    seen: list[tuple[int, bool]] = []
    original = pipeline.signal_change

    def checked(connection: sa.Connection) -> None:
        stored = connection.execute(sa.select(sa.func.count()).select_from(events)).scalar()
        maintained, recomputed = _profiles(connection)
        seen.append((stored, maintained == recomputed))
        original(connection)

    monkeypatch.setattr(pipeline, "signal_change", checked)
    return seen


def test_batches_of_a_file_share_write_transactions(store, tmp_path, small_batches, commits):
    path = tmp_path / "events.jsonl"
    _write(path, _events(14))  # 7 batches of 2: transactions of 3, 3 and 1 batches

    report = ingest_files(store, [path], now=NOW)

    assert report.events_inserted == 14
    assert commits == [(6, True), (12, True), (14, True)]
    with store.connect() as connection:
        maintained, recomputed = _profiles(connection)
    assert maintained == recomputed


def test_an_error_rolls_back_the_whole_transaction(store, tmp_path, small_batches, monkeypatch):
    path = tmp_path / "events.jsonl"
    _write(path, _events(14))
    original = getattr(BatchWriter, "add_events", None)
    calls = []

    def failing(self, rows, **kwargs):
        calls.append(len(rows))
        if len(calls) == 5:  # the second batch of the second transaction
            raise RuntimeError("disk full")
        return original(self, rows, **kwargs)

    monkeypatch.setattr(BatchWriter, "add_events", failing, raising=False)
    progress: list[int] = []
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_files(store, [path], now=NOW, progress=progress.append)

    with store.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(events)).scalar()
        maintained, recomputed = _profiles(connection)
    assert stored == 6  # the first transaction only: nothing of the second
    assert maintained == recomputed
    assert sum(progress) == 6  # progress counts committed rows only


def test_unsubscribes_and_stage_flags_cover_every_batch_of_a_transaction(
    store, tmp_path, small_batches, commits
):
    items = [
        {"user": "u1", "type": "unsubscribe", "at": "2026-04-01T00:00:00Z"},
        {"user": "u2", "type": "visit", "at": "2026-02-01T00:00:00Z"},
        {"user": "u3", "type": "visit", "at": "2026-02-01T00:00:00Z"},
        {"user": "u1", "type": "unsubscribe", "at": "2026-05-01T00:00:00Z"},  # latest: wins
        {"user": "u2", "type": "unsubscribe", "at": "2026-03-01T00:00:00Z"},
        {"user": "u1", "type": "unsubscribe", "at": "2026-02-01T00:00:00Z"},
    ]
    path = tmp_path / "events.jsonl"
    _write(path, items)

    ingest_files(store, [path], now=NOW)

    assert commits == [(6, True)]  # one transaction of 3 batches
    with store.connect() as connection:
        rows = connection.execute(
            sa.select(users.c.id, users.c.unsubscribed_at, users.c.stage_dirty).order_by("id")
        )
        assert [tuple(row) for row in rows] == [
            ("u1", datetime(2026, 5, 1, tzinfo=UTC), True),
            ("u2", datetime(2026, 3, 1, tzinfo=UTC), True),
            ("u3", None, True),
        ]


def test_every_batch_user_is_flagged_even_when_its_events_were_stored(
    store, tmp_path, small_batches
):
    first = _events(6)
    path = tmp_path / "first.jsonl"
    _write(path, first)
    ingest_files(store, [path], now=NOW)
    with store.begin() as connection:
        connection.execute(users.update().values(stage_dirty=False))

    again = tmp_path / "again.jsonl"
    _write(again, first)  # duplicates only, over 3 batches of one transaction
    report = ingest_files(store, [again], now=NOW)

    assert (report.events_inserted, report.duplicates_skipped) == (0, 6)
    with store.connect() as connection:
        flags = connection.execute(sa.select(users.c.stage_dirty)).scalars().all()
        maintained, recomputed = _profiles(connection)
    assert flags == [True, True, True]
    assert maintained == recomputed


def test_unknown_users_in_a_later_batch_are_rejected_after_the_commit(
    store, tmp_path, small_batches
):
    users_path = tmp_path / "users.jsonl"
    _write(users_path, [{"id": "u0"}, {"id": "u1"}])
    items = _events(6)  # u0, u1, u2, u0, u1, u2: u2 is unknown, in batches 2 and 3
    path = tmp_path / "events.jsonl"
    _write(path, items)

    report = ingest_files(store, [users_path, path], now=NOW, require_users=True)

    assert report.events_inserted == 4
    assert [str(reject) for reject in report.rejected] == [
        f"{path}:3: unknown user 'u2'",
        f"{path}:6: unknown user 'u2'",
    ]
    rejects = (tmp_path / "events.jsonl.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 2
    with store.connect() as connection:
        maintained, recomputed = _profiles(connection)
        assert connection.execute(sa.select(sa.func.count()).select_from(users)).scalar() == 2
    assert maintained == recomputed


def test_a_transaction_ends_after_its_time(store, tmp_path, small_batches, commits, monkeypatch):
    monkeypatch.setattr(pipeline, "TRANSACTION_SECONDS", {"sqlite": 0.0, "postgresql": 0.0})
    path = tmp_path / "events.jsonl"
    _write(path, _events(6))

    ingest_files(store, [path], now=NOW)

    assert commits == [(2, True), (4, True), (6, True)]
