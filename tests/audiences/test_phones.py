"""Phone numbers by the book (engine/phones.py): read in the user's country, else the
shop's, with libphonenumber; invalid numbers are never exported, and are counted."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "delivery"))
from delivery_helpers import T0, add_users, plan  # noqa: E402

from cli import app  # noqa: E402
from engine.audiences.normalise import sha256_hex  # noqa: E402
from engine.audiences.sync import export_audience, sync_audience  # noqa: E402
from engine.delivery.channels import ChannelSet  # noqa: E402
from engine.delivery.dispatcher import dispatch_until_idle  # noqa: E402
from engine.phones import InvalidPhone, to_e164  # noqa: E402
from engine.store import Store  # noqa: E402

AUDIENCE = "lapsed-high-value"


def members(store, *users):
    add_users(store, *users)
    for user in users:
        plan(store, "audience", user["id"], {"name": AUDIENCE})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())


def with_shop_country(store, country: str) -> Store:
    """The same database, with [shop] country set (phone_country_code stays "86")."""
    shop = store.settings.shop.model_copy(update={"country": country})
    return Store(engine=store.engine, settings=store.settings.model_copy(update={"shop": shop}))


def read_csv(path):
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


# ---------------- the normaliser


@pytest.mark.parametrize(
    ("raw", "user_country", "shop_country", "expected"),
    [
        # A US user's national number: the trunk "1" is the US's, not China's "+86 1...".
        ("1 800 555 0100", "US", "CN", "+18005550100"),
        ("(201) 555-0123", "us", "CN", "+12015550123"),  # users.country in any case
        # Italy keeps the leading zero: it is part of the number, not a trunk prefix.
        ("06 1234 5678", "IT", "CN", "+390612345678"),
        # No country of the user's own (or one libphonenumber does not know): the shop's.
        ("138 0013 8000", None, "CN", "+8613800138000"),
        ("138 0013 8000", "", "CN", "+8613800138000"),
        ("138 0013 8000", "XX", "CN", "+8613800138000"),
        ("1 800 555 0100", None, "US", "+18005550100"),
        # "+" and "00" are international whatever the region (the US dials 011, not 00).
        ("+86 138 0013 8000", "US", "CN", "+8613800138000"),
        ("0039 06 1234 5678", "US", "CN", "+390612345678"),
        ("0086-138-0013-8000", "IT", "US", "+8613800138000"),
        ("  +1-800-555-0100  ", None, None, "+18005550100"),
    ],
)
def test_to_e164(raw, user_country, shop_country, expected):
    assert to_e164(raw, user_country, shop_country) == expected


@pytest.mark.parametrize(
    ("raw", "user_country", "shop_country", "reason", "message"),
    [
        ("12345", None, "CN", "invalid", "'12345' is not a valid phone number (read as +8612345)"),
        # Meta's own test vector is a fictional number: formatted, but never sent.
        ("+1 555 987 6543", None, "CN", "invalid", "(read as +15559876543)"),
        ("call me", "US", "CN", "unparseable", "'call me' is not a phone number"),
        ("+999 1234", None, "CN", "unparseable", "'+999 1234': unknown country calling code"),
        ("138 0013 8000", None, None, "unparseable", "no country code, and no country"),
    ],
)
def test_to_e164_rejects_with_a_reason(raw, user_country, shop_country, reason, message):
    with pytest.raises(InvalidPhone) as caught:
        to_e164(raw, user_country, shop_country)
    assert caught.value.reason == reason
    assert message in str(caught.value)


# ---------------- exports of a real store


def test_export_reads_each_number_in_its_users_country(store, tmp_path):
    members(
        store,
        {"id": "u1", "phone": "1 800 555 0100", "country": "US"},
        {"id": "u2", "phone": "06 1234 5678", "country": "IT"},
        {"id": "u3", "phone": "138 0013 8000", "country": None},  # the shop's: CN
        {"id": "u4", "phone": "0044 7911 123456", "country": "CN"},
    )
    google = export_audience(store, AUDIENCE, "google", tmp_path, now=T0)
    assert [row[1] for row in read_csv(google.files[0])[1:]] == [
        sha256_hex("+18005550100"),
        sha256_hex("+390612345678"),
        sha256_hex("+8613800138000"),
        sha256_hex("+447911123456"),
    ]
    meta = export_audience(store, AUDIENCE, "meta", tmp_path, now=T0)
    [document] = [json.loads(f.read_text()) for f in meta.files]
    assert [row[1] for row in document["payload"]["data"]] == [
        sha256_hex("18005550100"),
        sha256_hex("390612345678"),
        sha256_hex("8613800138000"),
        sha256_hex("447911123456"),
    ]
    plain = export_audience(store, AUDIENCE, "csv", tmp_path, now=T0)
    assert [row[2] for row in read_csv(plain.files[0])[1:]] == [
        "+18005550100",
        "+390612345678",
        "+8613800138000",
        "+447911123456",
    ]
    assert google.phones_left_out == meta.phones_left_out == plain.phones_left_out == {}


def test_the_shop_country_decides_not_phone_country_code(store, tmp_path):
    members(store, {"id": "u1", "phone": "1 800 555 0100", "country": None})
    us_shop = with_shop_country(store, "US")
    assert us_shop.settings.shop.phone_country_code == "86"
    result = export_audience(us_shop, AUDIENCE, "csv", tmp_path, now=T0)
    assert read_csv(result.files[0])[1][2] == "+18005550100"


def test_invalid_numbers_are_left_out_and_counted(store, tmp_path):
    members(
        store,
        {"id": "u1", "phone": "+1 800 555 0100", "country": "US"},
        {"id": "u2", "phone": "12345", "country": "CN"},  # invalid: exported by email only
        {"id": "u3", "phone": "+1 555 987 6543", "country": "US"},  # fictional 555 number
        {"id": "u4", "phone": "n/a", "email": None},  # unparseable and no email: not exported
    )
    result = export_audience(store, AUDIENCE, "google", tmp_path, now=T0)
    rows = read_csv(result.files[0])[1:]
    assert [(row[0], row[1]) for row in rows] == [
        (sha256_hex("u1@example.com"), sha256_hex("+18005550100")),
        (sha256_hex("u2@example.com"), ""),
        (sha256_hex("u3@example.com"), ""),
    ]
    assert (result.added, result.skipped_no_identifier) == (3, 1)
    assert result.phones_left_out == {"invalid": 2, "unparseable": 1}

    plain = export_audience(store, AUDIENCE, "csv", tmp_path, now=T0)
    assert [row[2] for row in read_csv(plain.files[0])[1:]] == ["+18005550100", "", "", ""]
    assert plain.phones_left_out == {"invalid": 2, "unparseable": 1}


def test_sync_counts_the_numbers_it_leaves_out(store, tmp_path):
    members(
        store,
        {"id": "u1", "phone": "1 800 555 0100", "country": "US"},
        {"id": "u2", "phone": "12345", "country": "CN"},
    )
    [result] = sync_audience(store, AUDIENCE, platforms=("meta",), out_dir=tmp_path, now=T0)
    [document] = [json.loads(f.read_text()) for f in result.files if ".add." in f.name]
    assert [row[1] for row in document["payload"]["data"]] == [sha256_hex("18005550100"), ""]
    assert (result.added, result.phones_left_out) == (2, {"invalid": 1})


def test_cli_says_how_many_numbers_were_left_out_and_why(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    members(
        store,
        {"id": "u1", "phone": "1 800 555 0100", "country": "US"},
        {"id": "u2", "phone": "12345"},
        {"id": "u3", "phone": "n/a", "email": None},
    )
    result = CliRunner().invoke(
        app, ["audiences", "export", AUDIENCE, "--format", "google", "--out", "exports"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "google: +2 -0 (1 without email or phone)",
        "  left out 2 phone numbers: 1 invalid, 1 unparseable",
        f"  wrote exports/{AUDIENCE}.google.csv",
    ]
    result = CliRunner().invoke(
        app, ["audiences", "sync", AUDIENCE, "--platform", "csv", "--out", "x", "--json"]
    )
    assert result.exit_code == 0, result.output
    [platform] = json.loads(result.output)
    assert platform["phones_left_out"] == {"invalid": 1, "unparseable": 1}
