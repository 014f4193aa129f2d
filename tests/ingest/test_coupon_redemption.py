"""Ingesting a purchase that carries a coupon code redeems the coupon, or says why not."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.config import load_settings
from engine.delivery.runner import run_dispatcher
from engine.ingest import ingest_files
from engine.planning.runner import evaluate
from engine.store import Store
from engine.store.delivery import Coupon, CouponRedemption
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
coupons = Coupon.__table__
redemptions = CouponRedemption.__table__


def test_a_purchase_with_the_code_redeems_it(store, settings, tmp_path):
    write_rule(
        settings,
        "welcome",
        "trigger: {event: signup}\nactions:\n  coupon: {value: 10, expires_in: 7d}\n",
    )
    ingest(store, tmp_path, now=T, events=[{"user": "a", "type": "signup", "at": T.isoformat()}])
    evaluate(store, ruleset_for(settings), at=T)
    run_dispatcher(store, once=True, at=T)
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


def reconfigured(store, settings, extra_toml: str) -> Store:
    """The same database with more nudge.toml (as a shop would edit it)."""
    toml = settings.project_dir / "nudge.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + extra_toml, encoding="utf-8")
    return Store(engine=store.engine, settings=load_settings(settings.project_dir, environ={}))


def buy(store, folder, *rows, now):
    path = folder / f"purchases-{len(list(folder.iterdir()))}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    report = ingest_files(store, [path], now=now, rejects_path=path.with_suffix(".rej"))
    assert not report.rejected, report.rejected
    return report


def outcomes(store) -> dict[str, tuple[str, str | None]]:
    with store.connect() as connection:
        rows = connection.execute(
            sa.select(redemptions.c.order_id, redemptions.c.outcome, redemptions.c.detail)
        )
        return {r.order_id: (r.outcome, r.detail) for r in rows}


def test_currency_and_minimum_order_refusals_say_why(store, settings, tmp_path):
    store = reconfigured(store, settings, "[currency.rates]\nUSD = 7.1\n")
    write_rule(
        store.settings,
        "welcome",
        "trigger: {event: signup}\n"
        "actions:\n  coupon: {value: 20, min_order: 150, expires_in: 7d}\n",
    )
    signups = [{"user": u, "type": "signup", "at": T.isoformat()} for u in ("a", "b", "c")]
    ingest(store, tmp_path, now=T, events=signups)
    evaluate(store, ruleset_for(store.settings), at=T)
    run_dispatcher(store, once=True, at=T)
    with store.connect() as connection:
        code = dict(connection.execute(sa.select(coupons.c.user_id, coupons.c.code)).all())
    at = (T + timedelta(days=1)).isoformat()

    report = buy(
        store,
        tmp_path,
        # 30 USD is 213 CNY: over the minimum, but not an order in the coupon's CNY.
        {"user": "a", "type": "purchase", "at": at, "order_id": "o1", "amount": 30,
         "currency": "USD", "coupon_code": code["a"]},
        {"user": "b", "type": "purchase", "at": at, "order_id": "o2", "amount": 120,
         "coupon_code": code["b"]},
        {"user": "c", "type": "purchase", "at": at, "order_id": "o3", "amount": 150,
         "currency": "CNY", "coupon_code": code["c"]},
        now=T + timedelta(days=1),
    )  # fmt: skip

    assert report.coupons == {"wrong_currency": 1, "below_min_order": 1, "redeemed": 1}
    assert outcomes(store) == {
        "o1": (
            "wrong_currency",
            "order 30.00 USD is not in CNY, the only currency the coupon applies to",
        ),
        "o2": ("below_min_order", "order 120.00 CNY is below the minimum order of 150.00 CNY"),
        "o3": ("redeemed", None),
    }


def test_the_code_of_an_email_never_sent_is_void_in_the_export_and_at_checkout(
    store, settings, tmp_path, monkeypatch
):
    store = reconfigured(store, settings, f'[rules]\ntemplates = "{TEMPLATES}"\n')
    write_rule(
        store.settings,
        "welcome",
        "trigger: {event: signup}\n"
        "actions:\n"
        "  coupon: {value: 10, expires_in: 7d}\n"
        "  email: {creative: welcome}\n",
    )
    users = [{"id": "a", "email": "a@example.com", "email_opt_in": True, "locale": "en"}]
    signup = {"user": "a", "type": "signup", "at": T.isoformat()}
    ingest(store, tmp_path, now=T, users=users, events=[signup])
    evaluate(store, ruleset_for(store.settings), at=T)
    # The shopper unsubscribes after the rule planned the email, before it is sent.
    soon = T + timedelta(minutes=5)
    ingest(store, tmp_path, now=soon, events=[{"user": "a", "type": "unsubscribe", "at": soon}])

    report = run_dispatcher(store, once=True, at=soon)

    assert report.outcomes == {"sent": 1, "skipped": 1}  # the coupon; the email
    assert report.reasons == {"unsubscribed": 1}
    monkeypatch.chdir(store.settings.project_dir)
    result = CliRunner().invoke(app, ["coupons", "export"])
    assert result.exit_code == 0, result.output
    [row] = csv.DictReader(io.StringIO(result.output))
    assert (row["user_id"], row["voided_at"], row["void_reason"]) == (
        "a",
        soon.isoformat(),
        "message_skipped:unsubscribed",
    )

    later = T + timedelta(days=1)
    bought = {"user": "a", "type": "purchase", "at": later.isoformat(), "order_id": "o1"}
    report = buy(store, tmp_path, {**bought, "amount": 99, "coupon_code": row["code"]}, now=later)

    assert report.coupons == {"void": 1}
    assert outcomes(store) == {
        "o1": (
            "void",
            "the code was cancelled at 2026-11-20 10:05:00 Asia/Shanghai because the message "
            "carrying it never reached the shopper (message_skipped:unsubscribed)",
        )
    }
