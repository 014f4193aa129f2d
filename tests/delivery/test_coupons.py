"""Coupons: codes, issuing only on delivery, redemption outcomes, CSV export."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa
from delivery_helpers import T0, add_users, outbox_rows, plan

from engine.coupons.codes import ALPHABET, generate_code, normalise_code
from engine.coupons.export import export_coupons
from engine.coupons.redeem import redeem_coupons
from engine.delivery.channels import ChannelSet
from engine.delivery.dispatcher import dispatch_until_idle
from engine.store.delivery import Coupon
from engine.store.people import Event


def test_codes_are_crockford_base32_with_optional_prefix():
    codes = {generate_code() for _ in range(2000)}
    assert len(codes) == 2000
    for code in codes:
        symbols = code.replace("-", "")
        assert len(symbols) == 12 and set(symbols) <= set(ALPHABET)
        assert not set(symbols) & set("ILOU")
    assert len(generate_code(10, "WELCOME").split("-")) == 4  # WELCOME-XXXX-XXXX-XX
    assert generate_code(10, "WELCOME").startswith("WELCOME-")


def test_normalisation_of_typed_codes():
    assert normalise_code(" ab1o-il2x ") == "AB10112X"
    assert normalise_code("welcome-7k3m") == normalise_code("WE1C0ME7K3M")


def coupons_of(store):
    table = Coupon.__table__
    with store.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(table).order_by(table.c.id))]


def test_issued_once_per_action_by_delivery(store):
    add_users(store, {"id": "u1"}, {"id": "u2"})
    plan(store, "coupon", "u1", {"value": 20, "min_order": 100, "expires_in": "14d"})
    plan(store, "coupon", "u2", {"percent_off": 15, "prefix": "VIP", "length": 10})
    assert coupons_of(store) == []  # planning reserves nothing
    report = dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    assert report.outcomes == {"sent": 2}
    first, second = coupons_of(store)
    assert (first["user_id"], first["value"], first["currency"], first["min_order"]) == (
        "u1",
        Decimal("20.00"),
        "CNY",
        Decimal("100.00"),
    )
    assert first["expires_at"] == T0 + timedelta(days=14)
    assert second["percent_off"] == 15 and second["code"].startswith("VIP-")
    assert second["expires_at"] == T0 + timedelta(days=30)
    # A retry of an already-issued action finds the same code.
    from engine.coupons.issue import issue_coupons
    from engine.delivery.context import PlannedAction

    row = outbox_rows(store)[0]
    fields = {k: row[k] for k in PlannedAction.__dataclass_fields__}
    with store.begin() as connection:
        again = issue_coupons(connection, [PlannedAction(**fields)], now=T0, default_currency="X")
    assert again[row["idempotency_key"]]["code"] == first["code"]
    assert len(coupons_of(store)) == 2


def purchase(store, user_id, code, at, n):
    with store.begin() as connection:
        connection.execute(
            sa.insert(Event.__table__),
            {
                "source_id": f"p{n}",
                "user_id": user_id,
                "type": "purchase",
                "occurred_at": at,
                "amount": Decimal("150"),
                "order_id": f"o{n}",
                "coupon_code": code,
                "properties": {},
                "ingested_at": at,
            },
        )


def test_redemption_outcomes(store):
    add_users(store, {"id": "u1"}, {"id": "u2"}, {"id": "u3"})
    plan(store, "coupon", "u1", {"value": 20, "expires_in": "7d"})
    plan(store, "coupon", "u3", {"value": 20, "expires_in": "1d"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    code1, code3 = (c["code"] for c in coupons_of(store))
    typed = code1.lower().replace("-", "").replace("0", "o").replace("1", "l")
    purchase(store, "u1", typed, T0 + timedelta(days=1), 1)  # redeemed (typed loosely)
    purchase(store, "u1", code1, T0 + timedelta(days=2), 2)  # already_used
    purchase(store, "u2", code1, T0 + timedelta(days=1), 3)  # foreign
    purchase(store, "u3", code3, T0 + timedelta(days=2), 4)  # expired
    purchase(store, "u2", "NOPE-0000-0000", T0, 5)  # unknown
    report = redeem_coupons(store, now=T0 + timedelta(days=3))
    assert dict(report.counts) == {
        "redeemed": 1,
        "already_used": 1,
        "foreign": 1,
        "expired": 1,
        "unknown": 1,
    }
    assert sorted((r["order_id"], r["outcome"]) for r in report.refused) == [
        ("o2", "already_used"),
        ("o3", "foreign"),
        ("o4", "expired"),
        ("o5", "unknown"),
    ]
    first = coupons_of(store)[0]
    assert (first["redeemed_at"], first["redeemed_order_id"]) == (T0 + timedelta(days=1), "o1")
    # Processing again is a no-op.
    assert redeem_coupons(store, now=T0 + timedelta(days=4)).counts == {}


def test_export_csv(store):
    add_users(store, {"id": "u1"})
    plan(store, "coupon", "u1", {"value": 20, "expires_in": "7d"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    out = io.StringIO()
    assert export_coupons(store, out) == 1
    header, line = out.getvalue().splitlines()
    code = coupons_of(store)[0]["code"]
    assert header == (
        "code,user_id,rule_id,value,percent_off,currency,min_order,issued_at,expires_at,"
        "redeemed_at,redeemed_order_id"
    )
    expires = (T0 + timedelta(days=7)).isoformat()
    assert line == f"{code},u1,winback,20.00,,CNY,,{T0.isoformat()},{expires},,"
