"""Ingesting users: upserts keep what a file does not say, tags, attributes, rejects."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from engine.ingest import ingest_files
from engine.store.people import User, UserTag

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = datetime(2026, 6, 2, tzinfo=UTC)
users = User.__table__
user_tags = UserTag.__table__


def user(store, user_id: str):
    with store.connect() as connection:
        return connection.execute(sa.select(users).where(users.c.id == user_id)).one()


def tags(store, user_id: str) -> list[str]:
    query = sa.select(user_tags.c.tag).where(user_tags.c.user_id == user_id).order_by("tag")
    with store.connect() as connection:
        return list(connection.execute(query).scalars())


def test_users_csv_is_upserted_and_idempotent(store, tmp_path):
    path = tmp_path / "users.csv"
    path.write_text(
        "id,email,name,country,timezone,member_tier,member_since,tags,email_opt_in,attributes.city\n"
        "u1,a@example.com,李雷,cn,Asia/Shanghai,gold,2025-01-01,vip;wholesale,yes,Beijing\n"
        "u2,b@example.com,Ann,US,America/New_York,,,,0,\n",
        encoding="utf-8",
    )
    first = ingest_files(store, [path], now=NOW)
    second = ingest_files(store, [path], now=LATER)

    assert (first.users_upserted, second.users_upserted, second.rejected_count) == (2, 2, 0)
    with store.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(users)).scalar() == 2
    u1 = user(store, "u1")
    assert (u1.name, u1.country, u1.member_tier, u1.email_opt_in, u1.sms_opt_in) == (
        "李雷",
        "CN",
        "gold",
        True,
        False,
    )
    # A date without a zone is midnight in the shop's zone (Asia/Shanghai, UTC+8).
    assert u1.member_since == datetime(2024, 12, 31, 16, tzinfo=UTC)
    assert u1.attributes == {"city": "Beijing"}
    assert (u1.created_at, u1.updated_at) == (NOW, LATER)
    assert tags(store, "u1") == ["vip", "wholesale"]


def test_a_later_file_updates_given_fields_and_keeps_the_others(store, tmp_path):
    first = tmp_path / "users.jsonl"
    first.write_text(
        '{"id": "u1", "email": "a@example.com", "tags": ["a", "b"], "sms_opt_in": true,'
        ' "attributes": {"city": "Beijing", "size": "M"}}\n',
        encoding="utf-8",
    )
    update = tmp_path / "consent.csv"
    update.write_text("id,sms_opt_in,tags,attributes.size\nu1,no,c,L\n", encoding="utf-8")
    ingest_files(store, [first], now=NOW)
    ingest_files(store, [update], now=LATER)

    u1 = user(store, "u1")
    assert (u1.email, u1.sms_opt_in, u1.updated_at) == ("a@example.com", False, LATER)
    assert u1.attributes == {"city": "Beijing", "size": "L"}
    assert tags(store, "u1") == ["c"]


def test_bad_user_rows_are_rejected_with_reasons(store, tmp_path):
    path = tmp_path / "users.csv"
    path.write_text(
        "id,timezone,country,email_opt_in\n"
        "u1,Asia/Shanghai,CN,true\n"
        "u2,Mars/Olympus,CN,true\n"
        "u3,UTC,ZZ,true\n"
        "u4,UTC,CN,maybe\n"
        ",UTC,CN,true\n",
        encoding="utf-8",
    )
    report = ingest_files(store, [path], now=NOW)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (3, "unknown time zone 'Mars/Olympus' (use an IANA name such as Asia/Shanghai)"),
        (4, "country must be an ISO 3166 alpha-2 code such as CN or US, got 'ZZ'"),
        (5, "email_opt_in must be true/false, 1/0 or yes/no, got 'maybe'"),
        (6, "missing required field 'id'"),
    ]
    assert report.users_upserted == 1


def test_user_values_the_database_cannot_store_are_rejected(store, tmp_path):
    path = tmp_path / "users.csv"
    path.write_text(
        "id,name,tags,attributes\n"
        'u1,Lei,vip,"{""size"": ""M""}"\n'
        'u2,"a\x00b",,\n'
        'u3,,"ok;bad\x00",\n'
        'u4,,,"{""score"": Infinity}"\n'
        'u5,,,"' + "[" * 5000 + '"\n',
        encoding="utf-8",
    )
    report = ingest_files(store, [path], now=NOW)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (3, "name contains a NUL character (U+0000), which cannot be stored"),
        (4, "a tag contains a NUL character (U+0000), which cannot be stored"),
        (5, "attributes.score: numbers must be finite, got inf"),
        (6, "attributes is not a JSON object: '" + "[" * 40 + "'"),
    ]
    assert report.users_upserted == 1
    assert user(store, "u1").attributes == {"size": "M"}


def test_a_folder_of_the_tz_database_is_not_a_time_zone(store, tmp_path):
    """ "US" and "America" are folders of the tz database: the standard library opens them
    as zone files and raises IsADirectoryError, which stopped the import (found by the
    fuzz test). Each row is rejected with the usual reason; the others are stored."""
    path = tmp_path / "users.csv"
    path.write_text("id,timezone\nu1,US\nu2,America\nu3,America/New_York\n", encoding="utf-8")
    report = ingest_files(store, [path], now=NOW)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, "unknown time zone 'US' (use an IANA name such as Asia/Shanghai)"),
        (3, "unknown time zone 'America' (use an IANA name such as Asia/Shanghai)"),
    ]
    assert report.users_upserted == 1
