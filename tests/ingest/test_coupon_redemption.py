"""Ingesting a purchase that carries a coupon code redeems the coupon."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.delivery.runner import run_dispatcher
from engine.ingest import ingest_files
from engine.planning.runner import evaluate
from engine.store.delivery import Coupon
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_a_purchase_with_the_code_redeems_it(store, settings, tmp_path):
    write_rule(
        settings,
        "welcome",
        "trigger: {event: signup}\nactions:\n  coupon: {value: 10, expires_in: 7d}\n",
    )
    ingest(store, tmp_path, now=T, events=[{"user": "a", "type": "signup", "at": T.isoformat()}])
    evaluate(store, ruleset_for(settings), at=T)
    run_dispatcher(store, once=True, at=T)
    coupons = Coupon.__table__
    with store.connect() as connection:
        code = connection.execute(sa.select(coupons.c.code)).scalar_one()
    typed = code.lower().replace("-", "")  # as a shopper types it at checkout
    purchase = tmp_path / "purchase.jsonl"
    row = {"user": "a", "type": "purchase", "amount": 120, "coupon_code": typed}
    row["at"] = (T + timedelta(days=1)).isoformat()
    purchase.write_text(json.dumps(row) + "\n", encoding="utf-8")

    report = ingest_files(store, [purchase], now=T + timedelta(days=1))

    assert report.coupons == {"redeemed": 1}
    with store.connect() as connection:
        redeemed = connection.execute(sa.select(coupons.c.redeemed_at)).scalar_one()
    assert redeemed == T + timedelta(days=1)
