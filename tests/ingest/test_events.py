"""Ingesting events: idempotency, rejects, time zones, profiles, unknown users."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.errors import IngestError
from engine.ingest import ingest_files
from engine.store.people import Event, User
from engine.store.profiles import PROFILE_COLUMNS, profile_aggregates, profiles
from tests.conftest import make_settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
events = Event.__table__
users = User.__table__


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def count(store, table) -> int:
    with store.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def stored_events(store) -> list[tuple]:
    query = sa.select(
        events.c.user_id, events.c.type, events.c.occurred_at, events.c.amount
    ).order_by(events.c.occurred_at, events.c.user_id)
    with store.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


EVENTS_JSONL = "\n".join(
    [
        '{"user": "u1", "type": "visit", "at": "2026-03-01T10:00:00+08:00", "page": "/"}',
        '{"user": "u1", "type": "purchase", "at": "2026-03-02T10:00:00+08:00", "amount": 99.5}',
        '{"user_id": "u2", "type": "signup", "occurred_at": "2026-03-03T00:00:00Z"}',
    ]
)


def test_same_file_twice_stores_each_event_once(store, tmp_path):
    path = write(tmp_path / "events.jsonl", EVENTS_JSONL + "\n")

    first = ingest_files(store, [path], now=NOW)
    second = ingest_files(store, [path], now=NOW)

    assert (first.events_inserted, first.duplicates_skipped, first.users_created) == (3, 0, 2)
    assert (second.events_inserted, second.duplicates_skipped, second.users_created) == (0, 3, 0)
    assert count(store, events) == 3
    assert count(store, users) == 2
    assert first.rejected == [] and not (tmp_path / "events.jsonl.rejects.jsonl").exists()


def test_csv_and_jsonl_of_the_same_events_are_the_same_events(store, tmp_path):
    jsonl = write(tmp_path / "events.jsonl", EVENTS_JSONL)
    csv = write(
        tmp_path / "events.csv",
        "user,type,at,amount,page\n"
        "u1,visit,2026-03-01T02:00:00Z,,/\n"
        "u1,purchase,2026-03-02 10:00:00,99.50,\n",
    )
    ingest_files(store, [jsonl], now=NOW)
    report = ingest_files(store, [csv], now=NOW)

    # Same instants and amounts written differently hash to the same source id.
    assert (report.events_inserted, report.duplicates_skipped) == (0, 2)
    assert stored_events(store) == [
        ("u1", "visit", datetime(2026, 3, 1, 2, tzinfo=UTC), None),
        ("u1", "purchase", datetime(2026, 3, 2, 2, tzinfo=UTC), Decimal("99.50")),
        ("u2", "signup", datetime(2026, 3, 3, tzinfo=UTC), None),
    ]


def test_explicit_event_ids_are_the_source_ids(store, tmp_path):
    path = write(
        tmp_path / "events.csv",
        "event_id,user,type,at\ne1,u1,visit,2026-03-01T10:00:00Z\ne1,u1,visit,2026-03-05T10:00:00Z\n",
    )
    report = ingest_files(store, [path], now=NOW)
    assert (report.events_inserted, report.duplicates_skipped) == (1, 1)
    with store.connect() as connection:
        assert connection.execute(sa.select(events.c.source_id)).scalars().all() == ["e1"]


def test_bad_rows_are_rejected_with_line_and_reason_and_good_rows_stored(store, tmp_path):
    path = write(
        tmp_path / "events.jsonl",
        "\n".join(
            [
                '{"user": "u1", "type": "visit", "at": "2026-03-01T10:00:00Z"}',
                '{"user": "u1", "type": "visit", "at": "yesterday"}',
                "",
                '{"user": "u1", "type": "purchase", "at": "2026-03-01T11:00:00Z", "amount": -5}',
                '{"user": "u1", "type": "visit", "at": "2026-03-01T12:00:00Z"',
                '{"user": "u1", "type": "purchase", "at": "2026-03-01T13:00:00Z"}',
                '{"type": "visit", "at": "2026-03-01T14:00:00Z"}',
                '["not", "an", "object"]',
                '{"user": "u2", "type": "refund", "at": "2026-03-01T15:00:00Z", "amount": "1.5"}',
            ]
        ),
    )
    report = ingest_files(store, [path], now=NOW)

    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "at is not an ISO 8601 time: 'yesterday'"),
        (4, "amount must not be negative, got -5"),
        (5, "malformed JSON: unexpected end of data at column 61"),
        (6, "missing required field 'amount' for a purchase event"),
        (7, "missing required field 'user'"),
        (8, "expected a JSON object, got list"),
    ]
    assert report.rows_read == 8
    assert report.events_inserted == 2
    rejects_file = tmp_path / "events.jsonl.rejects.jsonl"
    written = [json.loads(line) for line in rejects_file.read_text().splitlines()]
    assert written[0] == {
        "file": str(path),
        "line": 2,
        "reason": "at is not an ISO 8601 time: 'yesterday'",
        "raw": '{"user": "u1", "type": "visit", "at": "yesterday"}',
    }
    assert [w["line"] for w in written] == [2, 4, 5, 6, 7, 8]


def test_csv_rejects_wrong_column_count_and_bad_values(store, tmp_path):
    path = write(
        tmp_path / "events.csv",
        "user,type,at,amount\n"
        "u1,visit,2026-03-01T10:00:00Z,\n"
        "u1,visit,2026-03-01T10:00:00Z\n"
        "u1,purchase,2026-03-01T10:00:00Z,12.345\n"
        '"u1","visit","2026-03-01T11:00:00Z",,extra\n'
        "u1,purchase,2026-03-01T12:00:00Z,abc\n"
        "u1,purchase,2026-03-01T13:00:00Z,10\n",
    )
    rejects = tmp_path / "out" / "bad.jsonl"
    rejects.parent.mkdir()
    report = ingest_files(store, [path], now=NOW, rejects_path=rejects)

    assert [str(r) for r in report.rejected] == [
        f"{path}:3: expected 4 columns, found 3",
        f"{path}:4: amount has more than 2 decimals: 12.345",
        f"{path}:5: expected 4 columns, found 5",
        f"{path}:6: amount is not a number: 'abc'",
    ]
    assert report.events_inserted == 2
    assert len(rejects.read_text().splitlines()) == 4
    assert report.rejects_paths == [str(rejects)]


def test_naive_times_are_read_in_the_shop_zone_across_dst(project_dir, store_url, tmp_path):
    from engine.store import open_store

    settings = make_settings(
        project_dir,
        shop={"timezone": "America/New_York", "currency": "USD"},
        database={"url": store_url},
    )
    store = open_store(settings)
    try:
        path = write(
            tmp_path / "events.csv",
            "user,type,at\n"
            "u1,visit,2026-03-07T12:00:00\n"  # EST, UTC-5
            "u1,visit,2026-03-08T02:30:00\n"  # does not exist: clocks jump 02:00 -> 03:00
            "u1,visit,2026-03-08T03:30:00\n"  # EDT, UTC-4
            "u1,visit,2026-11-01T01:30:00\n"  # happens twice: the first (EDT) is taken
            "u1,visit,2026-11-01T01:30:00-05:00\n"  # the second one, with its offset
            "u1,visit,2026-11-02T12:00:00\n",  # EST again
        )
        report = ingest_files(store, [path], now=NOW)
        assert [(r.line, r.reason) for r in report.rejected] == [
            (
                3,
                "at '2026-03-08T02:30:00' does not exist in America/New_York (clocks jump "
                "forward at that hour); give the time with its UTC offset",
            )
        ]
        assert [row[2] for row in stored_events(store)] == [
            datetime(2026, 3, 7, 17, tzinfo=UTC),
            datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
            datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
            datetime(2026, 11, 2, 17, tzinfo=UTC),
        ]
    finally:
        store.dispose()


def test_unknown_users_are_created_or_rejected_with_require_users(store, tmp_path):
    users_csv = write(tmp_path / "users.csv", "id,email\nu1,a@example.com\n")
    path = write(
        tmp_path / "events.jsonl",
        '{"user": "u1", "type": "visit", "at": "2026-03-01T10:00:00Z"}\n'
        '{"user": "u9", "type": "visit", "at": "2026-03-01T10:00:00Z"}\n',
    )
    # Users files are ingested first whatever the order given.
    report = ingest_files(store, [path, users_csv], now=NOW, require_users=True)
    assert [(r.line, r.reason) for r in report.rejected] == [(2, "unknown user 'u9'")]
    assert (report.events_inserted, report.users_created) == (1, 0)
    assert count(store, users) == 1

    report = ingest_files(store, [path], now=NOW)
    assert (report.events_inserted, report.duplicates_skipped, report.users_created) == (1, 1, 1)
    with store.connect() as connection:
        bare = connection.execute(sa.select(users).where(users.c.id == "u9")).one()
    assert (bare.email, bare.email_opt_in, bare.attributes) == (None, False, {})


def test_unsubscribe_events_set_the_latest_unsubscribe_time(store, tmp_path):
    late = write(
        tmp_path / "late.jsonl",
        '{"user": "u1", "type": "unsubscribe", "at": "2026-04-01T00:00:00Z"}\n',
    )
    early = write(
        tmp_path / "early.jsonl",
        '{"user": "u1", "type": "unsubscribe", "at": "2026-02-01T00:00:00Z"}\n'
        '{"user": "u2", "type": "visit", "at": "2026-02-01T00:00:00Z"}\n',
    )
    ingest_files(store, [late], now=NOW)
    ingest_files(store, [early], now=NOW)
    with store.connect() as connection:
        rows = connection.execute(sa.select(users.c.id, users.c.unsubscribed_at).order_by("id"))
        assert [tuple(r) for r in rows] == [("u1", datetime(2026, 4, 1, tzinfo=UTC)), ("u2", None)]


def test_stdin_is_sniffed_as_jsonl_and_rejects_go_to_cwd(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = EVENTS_JSONL + '\n{"user": "u3", "type": "visit"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    report = ingest_files(store, ["-"], now=NOW)
    assert report.files[0].file == "stdin" and report.files[0].format == "jsonl"
    assert report.events_inserted == 3
    assert [str(r) for r in report.rejected] == ["stdin:4: missing required field 'at'"]
    assert (tmp_path / "stdin.rejects.jsonl").exists()


def test_unreadable_file_is_a_fatal_error_naming_it(store, tmp_path):
    with pytest.raises(IngestError, match=r"cannot read .*missing\.csv: No such file"):
        ingest_files(store, [tmp_path / "missing.csv"], now=NOW)


def test_csv_without_required_columns_is_fatal(store, tmp_path):
    path = write(tmp_path / "events.csv", "user,type,amount\nu1,visit,\n")
    with pytest.raises(IngestError) as error:
        ingest_files(store, [path], now=NOW)
    assert str(error.value) == f"{path}: a events file needs the column(s) 'at'"


def test_progress_is_called_with_rows_processed(store, tmp_path):
    path = write(tmp_path / "events.jsonl", EVENTS_JSONL)
    seen: list[int] = []
    ingest_files(store, [path], now=NOW, progress=seen.append)
    assert sum(seen) == 3


def _profiles(store) -> list[tuple]:
    columns = [profiles.c.user_id, *(profiles.c[name] for name in PROFILE_COLUMNS)]
    with store.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(*columns).order_by("user_id"))]


def _recomputed(store) -> list[tuple]:
    query = profile_aggregates().subquery()
    with store.connect() as connection:
        rows = connection.execute(sa.select(query).order_by(query.c.user_id))
        return [tuple(r) for r in rows]


EVENT = st.fixed_dictionaries(
    {
        "user": st.sampled_from(["u1", "u2", "u3"]),
        "type": st.sampled_from(["visit", "signup", "purchase", "refund", "email_open"]),
        "at": st.integers(0, 400).map(lambda d: f"2025-06-{1 + d % 28:02d}T{d % 24:02d}:00:00Z"),
        "amount": st.integers(0, 50_000).map(lambda cents: f"{cents / 100:.2f}"),
    }
)


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(EVENT, min_size=1, max_size=12, unique_by=lambda e: (e["user"], e["at"])))
def test_out_of_order_events_give_the_profiles_of_a_full_recomputation(store, tmp_path, batch):
    ordered = sorted(batch, key=lambda e: e["at"])
    newer, older = ordered[len(ordered) // 2 :], ordered[: len(ordered) // 2]
    with store.begin() as connection:  # hypothesis reuses the fixture: start empty
        for table in ("events", "profiles", "users"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    # Newer events first, then older ones in a second import.
    for name, part in (("newer.jsonl", newer), ("older.jsonl", older)):
        lines = "\n".join(json.dumps(e) for e in part)
        ingest_files(store, [write(tmp_path / name, lines)], now=NOW)
    assert _profiles(store) == _recomputed(store)
    assert len(_profiles(store)) == len({e["user"] for e in batch})


def test_values_the_database_cannot_store_are_rejected_row_by_row(store, tmp_path):
    # Each of these used to abort the batch (PostgreSQL refuses NUL; a NaN is not JSON)
    # or crash the import (an instant past year 9999 in UTC).
    jsonl = write(
        tmp_path / "events.jsonl",
        "\n".join(
            [
                '{"user": "u1", "type": "visit", "at": "2026-03-01T10:00:00Z"}',
                '{"user": "u1", "type": "visit", "at": "2026-03-01T11:00:00Z", "page": "a\\u0000"}',
                '{"user": "u1", "type": "visit", "at": "9999-12-31T23:59:59-05:00"}',
                '{"user": "u1", "type": "visit", "at": "2026-03-01T12:00:00Z",'
                ' "n": 18446744073709551615}',
                '{"user": "u1\\u0000", "type": "visit", "at": "2026-03-01T13:00:00Z"}',
            ]
        ),
    )
    csv = write(
        tmp_path / "events.csv",
        "user,type,at,properties\n"
        'u2,visit,2026-03-01T10:00:00Z,"{""a"": NaN}"\n'
        'u2,visit,2026-03-01T11:00:00Z,"{""a"": 1}"\n',
    )
    report = ingest_files(store, [jsonl, csv], now=NOW)

    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "properties.page: contains a NUL character (U+0000), which cannot be stored"),
        (3, "at '9999-12-31T23:59:59-05:00' is out of range in UTC (years 1 to 9999)"),
        (4, "properties.n: integers must fit in 64 bits (write longer ones as strings)"),
        (5, "user contains a NUL character (U+0000), which cannot be stored"),
        (2, "properties.a: numbers must be finite, got nan"),
    ]
    assert report.events_inserted == 2
    assert count(store, events) == 2
