"""Audience membership, exports per platform, and sync of adds/removes."""

from __future__ import annotations

import csv
import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "delivery"))
from delivery_helpers import T0, add_users, plan  # noqa: E402

from engine.audiences import formats  # noqa: E402
from engine.audiences.normalise import sha256_hex  # noqa: E402
from engine.audiences.sync import export_audience, sync_audience  # noqa: E402
from engine.delivery.channels import ChannelSet  # noqa: E402
from engine.delivery.dispatcher import dispatch_until_idle  # noqa: E402
from engine.errors import NotFoundError  # noqa: E402
from engine.store.people import User  # noqa: E402


def members(store, *users):
    add_users(store, *users)
    for user in users:
        plan(store, "audience", user["id"], {"name": "lapsed-high-value"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())


def read_csv(path):
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_google_export_is_hashed_with_exact_headers(store, tmp_path):
    members(
        store,
        {
            "id": "u1",
            "email": " Jefferson.Loves.hiking@gmail.com",
            "phone": "+1-800-555-0100",
            "name": "Ada Lovelace",
            "country": "us",
            "attributes": {"zip": "94043"},
        },
        {"id": "u2", "email": "quinn", "phone": None},  # nothing usable: left out
        {"id": "u3", "ads_opt_in": False},  # no consent: never exported
    )
    result = export_audience(store, "lapsed-high-value", "google", tmp_path, now=T0)
    assert [f.name for f in result.files] == ["lapsed-high-value.google.csv"]
    assert (result.added, result.skipped_no_identifier) == (1, 1)
    assert read_csv(result.files[0]) == [
        ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"],
        [
            sha256_hex("jeffersonloveshiking@gmail.com"),
            sha256_hex("+18005550100"),
            sha256_hex("ada"),
            sha256_hex("lovelace"),
            "US",
            "94043",
        ],
    ]


def test_meta_export_batches_with_session(store, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "META_BATCH", 2)
    members(store, *({"id": f"u{i}", "country": "US"} for i in range(5)))
    result = export_audience(store, "lapsed-high-value", "meta", tmp_path, now=T0)
    documents = [json.loads(f.read_text()) for f in result.files]
    assert [len(d["payload"]["data"]) for d in documents] == [2, 2, 1]
    assert [d["session"]["batch_seq"] for d in documents] == [1, 2, 3]
    assert [d["session"]["last_batch_flag"] for d in documents] == [False, False, True]
    assert {d["session"]["estimated_num_total"] for d in documents} == {5}
    assert len({d["session"]["session_id"] for d in documents}) == 1
    assert documents[0]["payload"]["schema"] == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
    assert documents[0]["payload"]["data"][0] == [
        sha256_hex("u0@example.com"),
        sha256_hex("8613800138000"),
        "",
        "",
        sha256_hex("us"),
    ]


def test_sync_adds_then_removes_withdrawn(store, tmp_path):
    members(store, {"id": "u1"}, {"id": "u2"}, {"id": "u3"})
    first = sync_audience(
        store, "lapsed-high-value", platforms=("csv", "google"), out_dir=tmp_path, now=T0
    )
    assert [(r.platform, r.added, r.removed) for r in first] == [("csv", 3, 0), ("google", 3, 0)]
    adds = read_csv(first[0].files[0])
    assert first[0].files[0].name == "lapsed-high-value.csv.20261111T020000Z.add.csv"
    assert [row[0] for row in adds] == ["user_id", "u1", "u2", "u3"]
    # Nothing changed: an empty sync.
    later = T0 + timedelta(hours=1)
    again = sync_audience(
        store, "lapsed-high-value", platforms=("google",), out_dir=tmp_path, now=later
    )
    assert (again[0].added, again[0].removed) == (0, 0)
    # u2 withdraws ads consent, u3 unsubscribes, u4 joins.
    users = User.__table__
    with store.begin() as connection:
        connection.execute(sa.update(users).where(users.c.id == "u2").values(ads_opt_in=False))
        connection.execute(sa.update(users).where(users.c.id == "u3").values(unsubscribed_at=later))
    members(store, {"id": "u4"})
    third = sync_audience(
        store,
        "lapsed-high-value",
        platforms=("google",),
        out_dir=tmp_path,
        now=later + timedelta(hours=1),
    )
    assert (third[0].added, third[0].removed) == (1, 2)
    add_file, remove_file = third[0].files
    assert read_csv(add_file)[1][0] == sha256_hex("u4@example.com")
    # Removes carry the hashes that were uploaded.
    assert sorted(row[0] for row in read_csv(remove_file)[1:]) == sorted(
        [sha256_hex("u2@example.com"), sha256_hex("u3@example.com")]
    )
    with store.connect() as connection:
        reasons = dict(
            connection.exec_driver_sql(
                "SELECT user_id, removed_reason FROM audience_members ORDER BY user_id"
            ).all()
        )
    assert reasons == {"u1": None, "u2": "no_ads_consent", "u3": "unsubscribed", "u4": None}


def test_unknown_audience(store, tmp_path):
    members(store, {"id": "u1"})
    with pytest.raises(NotFoundError, match="did you mean 'lapsed-high-value'"):
        export_audience(store, "lapsed-high-valu", "csv", tmp_path, now=T0)
