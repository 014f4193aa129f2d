"""Profiles kept up by ingest, batch by batch, equal a full recomputation from events.

Ingest adds each batch's inserted events to the stored profiles (never re-reading a
user's other events). Whatever the split into files and batches, the order of the
events and the duplicates sent again (within a batch, across batches, across imports),
the profiles must be exactly what `profile_aggregates` computes from all stored events,
down to the stored bits of SQLite's doubles.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.ingest import ingest_files, pipeline
from engine.store.people import Event, User
from engine.store.profiles import PROFILE_COLUMNS, profile_aggregates, profiles

NOW = datetime(2026, 6, 1, tzinfo=UTC)
START = datetime(2025, 1, 1, tzinfo=UTC)
events = Event.__table__
users = User.__table__
TYPES = ["visit", "signup", "purchase", "refund", "email_open"]
# Amounts whose float sums depend on their order (0.3 + 0.4 + 0.2 + 0.1 is
# 0.9999999999999999, 0.1 + 0.2 + 0.3 + 0.4 is 1.0), and any others.
AMOUNTS = st.one_of(
    st.sampled_from(["0.10", "0.20", "0.30", "0.40", "33.33", "33.34", "19.99", "0.07"]),
    st.integers(0, 999_999).map(lambda cents: f"{cents / 100:.2f}"),
)
EVENT = st.fixed_dictionaries(
    {
        "user": st.sampled_from(["u1", "u2", "u3", "u4"]),
        "type": st.sampled_from(TYPES),
        "at": st.integers(0, 5_000).map(lambda m: (START + timedelta(minutes=m)).isoformat()),
        "amount": AMOUNTS,
    }
)


def _write(path, items) -> None:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


def _empty(store) -> None:
    with store.begin() as connection:  # hypothesis reuses the fixture: start empty
        for table in ("events", "profiles", "users"):
            connection.execute(sa.text(f"DELETE FROM {table}"))


def _raw(store, query: sa.Select) -> list[tuple]:
    """Rows as the driver returns them: SQLite's doubles and texts as stored, unrounded."""
    with store.connect() as connection:
        compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
        return [tuple(row) for row in connection.exec_driver_sql(str(compiled))]


def maintained(store) -> list[tuple]:
    columns = [profiles.c.user_id, *(profiles.c[name] for name in PROFILE_COLUMNS)]
    return _raw(store, sa.select(*columns).order_by(profiles.c.user_id))


def recomputed(store) -> list[tuple]:
    query = profile_aggregates().subquery()
    columns = [query.c.user_id, *(query.c[name] for name in PROFILE_COLUMNS)]
    return _raw(store, sa.select(*columns).order_by(query.c.user_id))


def typed(store, table_or_query) -> list[tuple]:
    query = table_or_query.subquery() if isinstance(table_or_query, sa.Select) else table_or_query
    columns = [query.c.user_id, *(query.c[name] for name in PROFILE_COLUMNS)]
    with store.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(*columns).order_by("user_id"))]


@hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=st.lists(EVENT, min_size=1, max_size=40),
    resent=st.lists(st.integers(0, 10_000), max_size=12),
    cuts=st.lists(st.integers(0, 60), max_size=3),
    batch_size=st.integers(1, 9),
)
def test_batch_by_batch_profiles_equal_a_full_recomputation(
    store, tmp_path, monkeypatch, items, resent, cuts, batch_size
):
    _empty(store)
    # Some events sent again later in the stream: duplicates within a batch, in a later
    # batch or in a later import, each to be skipped and counted nowhere.
    stream = list(items)
    for position in resent:
        stream.insert(position % (len(stream) + 1), items[position % len(items)])
    monkeypatch.setattr(pipeline, "BATCH_SIZE", batch_size)
    bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    inserted = 0
    for number, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        path = tmp_path / f"part{number}.jsonl"
        _write(path, stream[start:end])
        inserted += ingest_files(store, [path], now=NOW).events_inserted

    distinct = {json.dumps(item, sort_keys=True) for item in items}
    assert inserted == len(distinct)
    assert maintained(store) == recomputed(store)
    assert typed(store, profiles) == typed(store, profile_aggregates())
    assert sum(row[-1] for row in maintained(store)) == len(distinct)  # event_count


def test_duplicates_skipped_by_the_insert_add_nothing(store, tmp_path):
    first = [
        {"user": "u1", "type": "purchase", "at": "2026-03-01T10:00:00Z", "amount": "10.00"},
        {"user": "u1", "type": "visit", "at": "2026-03-02T10:00:00Z"},
    ]
    again = [
        *first,  # the same events again, and one new refund
        {"user": "u1", "type": "refund", "at": "2026-03-03T10:00:00Z", "amount": "2.50"},
        first[0],  # and a duplicate inside the batch itself
    ]
    _write(tmp_path / "first.jsonl", first)
    _write(tmp_path / "again.jsonl", again)

    ingest_files(store, [tmp_path / "first.jsonl"], now=NOW)
    report = ingest_files(store, [tmp_path / "again.jsonl"], now=NOW)

    assert (report.events_inserted, report.duplicates_skipped) == (1, 3)
    with store.connect() as connection:
        profile = connection.execute(sa.select(profiles)).one()
    assert (profile.event_count, profile.purchase_count, profile.refund_count) == (3, 1, 1)
    assert profile.total_spent == Decimal("7.50")
    assert profile.avg_order_value == Decimal("7.50")
    assert profile.first_seen_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert profile.last_seen_at == datetime(2026, 3, 3, 10, tzinfo=UTC)
    assert maintained(store) == recomputed(store)


def test_cent_amounts_sum_to_the_cent_whatever_their_order(store, tmp_path):
    """0.30 + 0.40 + 0.20 + 0.10 in that order is 0.9999999999999999 as doubles: the
    stored total is 1.00 exactly, so `total_spent >= 1` holds on both backends."""
    purchases = [
        {"user": "u1", "type": "purchase", "at": f"2026-03-0{day}T10:00:00Z", "amount": amount}
        for day, amount in ((1, "0.30"), (2, "0.40"), (3, "0.20"), (4, "0.10"))
    ]
    refunds = [
        {"user": "u2", "type": "purchase", "at": "2026-03-01T10:00:00Z", "amount": "0.10"},
        {"user": "u2", "type": "purchase", "at": "2026-03-02T10:00:00Z", "amount": "0.20"},
        {"user": "u2", "type": "refund", "at": "2026-03-03T10:00:00Z", "amount": "0.30"},
    ]
    _write(tmp_path / "events.jsonl", purchases + refunds)

    ingest_files(store, [tmp_path / "events.jsonl"], now=NOW)

    query = sa.select(profiles.c.user_id, profiles.c.total_spent, profiles.c.avg_order_value)
    assert _raw(store, query.order_by(profiles.c.user_id)) in (
        [("u1", 1, 0.25), ("u2", 0, 0)],  # SQLite: doubles (NUMERIC affinity keeps 1.0 as 1)
        [("u1", Decimal("1.00"), Decimal("0.25")), ("u2", Decimal("0.00"), Decimal("0.00"))],
    )
    with store.connect() as connection:
        rich = connection.execute(
            sa.select(profiles.c.user_id).where(profiles.c.total_spent >= Decimal("1.00"))
        )
        assert rich.scalars().all() == ["u1"]
        broke = connection.execute(sa.select(profiles.c.user_id).where(profiles.c.total_spent == 0))
        assert broke.scalars().all() == ["u2"]
    assert maintained(store) == recomputed(store)


def test_only_the_users_of_a_batch_are_flagged_for_the_stage_refresh(store, tmp_path):
    _write(tmp_path / "a.jsonl", [{"user": "u1", "type": "visit", "at": "2026-03-01T10:00Z"}])
    _write(tmp_path / "b.jsonl", [{"user": "u2", "type": "visit", "at": "2026-03-01T10:00Z"}])
    ingest_files(store, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], now=NOW)
    with store.begin() as connection:
        connection.execute(users.update().values(stage_dirty=False))

    _write(tmp_path / "c.jsonl", [{"user": "u1", "type": "visit", "at": "2026-03-02T10:00Z"}])
    ingest_files(store, [tmp_path / "c.jsonl"], now=NOW)

    with store.connect() as connection:
        flagged = connection.execute(sa.select(users.c.id).where(users.c.stage_dirty))
        assert flagged.scalars().all() == ["u1"]
