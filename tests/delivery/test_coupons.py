"""Coupons: codes, issuing only on delivery, redemption outcomes, voids, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from delivery_helpers import (
    COUPON,
    T0,
    add_users,
    outbox_rows,
    plan,
    plan_with_offer,
    smtp_store,
    with_delivery,
)
from sinks import HttpSink, SmtpSink

from engine.coupons.codes import ALPHABET, generate_code, normalise_code
from engine.coupons.export import export_coupons
from engine.coupons.redeem import redeem_coupons
from engine.coupons.void import live
from engine.delivery.channels import ChannelSet, build_channels
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.status import retry_dead
from engine.delivery.unsubscribe import ensure_tokens, unsubscribe
from engine.store.delivery import Coupon, CouponRedemption
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
    # Every position draws from the whole alphabet (2,000 draws miss one of 32 symbols
    # with odds of ~1e-26): no position is fixed or biased to a part of it.
    for position in range(12):
        assert {code.replace("-", "")[position] for code in codes} == set(ALPHABET)


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
    # Valid through the whole last day in the user's zone (the shop's, Asia/Shanghai,
    # here): the email says "valid until 25 November", so it works that evening too.
    assert first["expires_at"] == datetime(2026, 11, 25, 15, 59, 59, 999999, tzinfo=UTC)
    assert second["percent_off"] == 15 and second["code"].startswith("VIP-")
    assert second["expires_at"] == datetime(2026, 12, 11, 15, 59, 59, 999999, tzinfo=UTC)
    # A retry of an already-issued action finds the same code.
    from engine.coupons.issue import issue_coupons
    from engine.delivery.context import PlannedAction

    row = outbox_rows(store)[0]
    fields = {k: row[k] for k in PlannedAction._fields}
    with store.begin() as connection:
        again = issue_coupons(
            connection,
            [PlannedAction(**fields)],
            now=T0,
            default_currency="X",
            zone_of=lambda _: store.settings.tz,
        )
    assert again[row["idempotency_key"]]["code"] == first["code"]
    assert len(coupons_of(store)) == 2


def purchase(store, user_id, code, at, n, amount="150", currency=None, original=None):
    """A purchase event as ingest stores it: `amount`/`currency` in the shop currency,
    `original` = (amount, currency) as the shop sent it when that was another currency."""
    original_amount, original_currency = original or (None, None)
    with store.begin() as connection:
        connection.execute(
            sa.insert(Event.__table__),
            {
                "source_id": f"p{n}",
                "user_id": user_id,
                "type": "purchase",
                "occurred_at": at,
                "amount": Decimal(amount),
                "currency": currency,
                "original_amount": None if original_amount is None else Decimal(original_amount),
                "original_currency": original_currency,
                "order_id": f"o{n}",
                "coupon_code": code,
                "properties": {},
                "ingested_at": at,
            },
        )


def details(store):
    """{order id: (outcome, detail)} of every processed purchase."""
    table = CouponRedemption.__table__
    with store.connect() as connection:
        rows = connection.execute(sa.select(table.c.order_id, table.c.outcome, table.c.detail))
        return {r.order_id: (r.outcome, r.detail) for r in rows}


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
    # Each refusal says why, in shop time, in words a support agent can repeat.
    assert details(store) == {
        "o1": ("redeemed", None),
        "o2": (
            "already_used",
            "the code was already used for order o1 at 2026-11-12 10:00:00 Asia/Shanghai",
        ),
        "o3": ("foreign", "the code was issued to another shopper's account"),
        "o4": (
            "expired",
            "the code expired at 2026-11-12 23:59:59.999999 Asia/Shanghai; "
            "the order was placed at 2026-11-13 10:00:00 Asia/Shanghai",
        ),
        "o5": ("unknown", "no coupon has the code NOPE-0000-0000"),
    }
    assert {r["order_id"]: r["detail"] for r in report.refused} == {
        order: detail for order, (_, detail) in details(store).items() if order != "o1"
    }
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
        "redeemed_at,redeemed_order_id,voided_at,void_reason"
    )
    expires = "2026-11-18T15:59:59.999999+00:00"  # the end of the last day in Shanghai
    assert line == f"{code},u1,winback,20.00,,CNY,,{T0.isoformat()},{expires},,,,"


def test_currency_and_minimum_order_are_compared_in_the_purchase_currency(store):
    """The shop is in CNY. A coupon is compared with what the shopper paid, in the
    currency they paid in, never with that amount converted into the shop currency."""
    add_users(store, {"id": "cny"}, {"id": "usd"}, {"id": "pct"})
    plan(store, "coupon", "cny", {"value": 20, "min_order": 150})  # the shop currency
    plan(store, "coupon", "usd", {"value": 5, "currency": "USD", "min_order": 50})
    plan(store, "coupon", "pct", {"percent_off": 10})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    cny, usd, pct = (c["code"] for c in coupons_of(store))
    day = timedelta(days=1)
    # 30 USD is 213 CNY, over the minimum, but the coupon takes CNY off CNY orders.
    purchase(store, "cny", cny, T0 + day, 1, "213.00", "CNY", ("30", "USD"))
    purchase(store, "cny", cny, T0 + 2 * day, 2, "120", "CNY")
    purchase(store, "cny", cny, T0 + 3 * day, 3, "150", "CNY")  # the minimum itself is enough
    # 40 USD is 284 CNY, and still below a minimum of 50 USD.
    purchase(store, "usd", usd, T0 + day, 4, "284.00", "CNY", ("40", "USD"))
    purchase(store, "usd", usd, T0 + 2 * day, 5, "426.00", "CNY", ("60", "USD"))
    # A percentage off is not tied to a currency.
    purchase(store, "pct", pct, T0 + day, 6, "142.00", "CNY", ("20", "USD"))

    report = redeem_coupons(store, now=T0 + 4 * day)

    assert dict(report.counts) == {"wrong_currency": 1, "below_min_order": 2, "redeemed": 3}
    assert details(store) == {
        "o1": (
            "wrong_currency",
            "order 30.00 USD is not in CNY, the only currency the coupon applies to",
        ),
        "o2": ("below_min_order", "order 120.00 CNY is below the minimum order of 150.00 CNY"),
        "o3": ("redeemed", None),
        "o4": ("below_min_order", "order 40.00 USD is below the minimum order of 50.00 USD"),
        "o5": ("redeemed", None),
        "o6": ("redeemed", None),
    }
    # A refused use takes no turn: the first acceptable purchase redeems the coupon.
    assert [(c["user_id"], c["redeemed_order_id"]) for c in coupons_of(store)] == [
        ("cny", "o3"),
        ("usd", "o5"),
        ("pct", "o6"),
    ]


def test_a_code_is_valid_up_to_and_including_its_expiry_instant(store):
    add_users(store, {"id": "u1"}, {"id": "u2"})
    plan(store, "coupon", "u1", {"value": 20, "expires_in": "7d"})
    plan(store, "coupon", "u2", {"value": 20, "expires_in": "7d"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    first, second = (c["code"] for c in coupons_of(store))
    expiry = datetime(2026, 11, 18, 15, 59, 59, 999999, tzinfo=UTC)  # the day's last instant
    purchase(store, "u1", first, expiry, 1)
    purchase(store, "u2", second, expiry + timedelta(microseconds=1), 2)

    redeem_coupons(store, now=expiry + timedelta(days=1))

    assert details(store) == {
        "o1": ("redeemed", None),
        "o2": (
            "expired",
            "the code expired at 2026-11-18 23:59:59.999999 Asia/Shanghai; "
            "the order was placed at 2026-11-19 00:00:00 Asia/Shanghai",
        ),
    }


# ---- coupons whose carrying message never reached the shopper are void


def dispatch(store, now, **kw):
    with build_channels(store.settings) as channels:
        return dispatch_until_idle(store, now=now, worker_id="w", channels=channels, **kw)


def exported(store) -> dict[str, dict[str, str]]:
    """The CSV of `nudge coupons export`, by user."""
    out = io.StringIO()
    export_coupons(store, out)
    return {row["user_id"]: row for row in csv.DictReader(io.StringIO(out.getvalue()))}


def by_user(store) -> dict[str, dict]:
    return {c["user_id"]: c for c in coupons_of(store)}


def test_unsubscribed_before_sending_voids_the_coupon(store):
    with SmtpSink() as sink:
        store = smtp_store(store, sink)
        add_users(store, {"id": "u1"}, {"id": "u2"})
        plan_with_offer(store, "email", "u1", {"creative": "winback"})
        plan(store, "coupon", "u2", COUPON)  # no message: a code for the shop's account page
        with store.begin() as connection:
            token = ensure_tokens(connection, ["u1"], T0)["u1"]
        unsubscribe(store, token, now=T0)  # between planning and sending

        report = dispatch(store, T0)

    assert report.reasons == {"unsubscribed": 1} and sink.messages == []
    coupons = by_user(store)
    assert (coupons["u1"]["voided_at"], coupons["u1"]["void_reason"]) == (
        T0,
        "message_skipped:unsubscribed",
    )
    assert coupons["u2"]["voided_at"] is None
    rows = exported(store)
    assert (rows["u1"]["voided_at"], rows["u1"]["void_reason"]) == (
        T0.isoformat(),
        "message_skipped:unsubscribed",
    )
    assert (rows["u2"]["voided_at"], rows["u2"]["void_reason"]) == ("", "")
    with store.connect() as connection:  # what a cost figure counts
        live_codes = connection.execute(sa.select(Coupon.__table__.c.code).where(live()))
        assert live_codes.scalars().all() == [coupons["u2"]["code"]]

    purchase(store, "u1", coupons["u1"]["code"], T0 + timedelta(days=1), 1)
    purchase(store, "u2", coupons["u2"]["code"], T0 + timedelta(days=1), 2)
    assert redeem_coupons(store, now=T0 + timedelta(days=2)).counts == {
        "void": 1,
        "redeemed": 1,
    }
    assert details(store)["o1"] == (
        "void",
        "the code was cancelled at 2026-11-11 10:00:00 Asia/Shanghai because the message "
        "carrying it never reached the shopper (message_skipped:unsubscribed)",
    )


def test_smtp_rejection_voids_the_coupon_until_a_retry_delivers_it(store):
    later = T0 + timedelta(hours=1)
    with SmtpSink(refuse={"u1@example.com"}) as sink:
        store = smtp_store(store, sink)
        add_users(store, {"id": "u1"})
        plan_with_offer(store, "email", "u1", {"creative": "winback"})

        assert dispatch(store, T0).reasons == {"rejected": 1}
        [coupon] = coupons_of(store)
        assert (coupon["voided_at"], coupon["void_reason"]) == (T0, "message_dead:rejected")
        assert exported(store)["u1"]["void_reason"] == "message_dead:rejected"

        # The address is fixed and the dead letter retried: the email that now reaches
        # the shopper shows the same code, so the code is live again.
        sink.refuse.clear()
        assert retry_dead(store, now=later) == 1
        assert dispatch(store, later).outcomes == {"sent": 1}
        [message] = sink.messages

    [coupon] = coupons_of(store)
    assert (coupon["voided_at"], coupon["void_reason"]) == (None, None)
    assert coupon["code"] in message.get_body(("plain",)).get_content()
    purchase(store, "u1", coupon["code"], later, 1)
    assert redeem_coupons(store, now=later).counts == {"redeemed": 1}


def test_sms_rejected_by_the_gateway_voids_the_coupon(store):
    with HttpSink() as sink:
        store = with_delivery(store, sms={"backend": "http", "url": sink.url + "/reject"})
        add_users(store, {"id": "u1", "locale": "en"})
        plan_with_offer(store, "sms", "u1", {"creative": "winback"})
        assert dispatch(store, T0).reasons == {"rejected": 1}
    [coupon] = coupons_of(store)
    assert (coupon["voided_at"], coupon["void_reason"]) == (T0, "message_dead:rejected")


def test_a_coupon_stays_live_while_any_message_of_its_decision_can_still_reach_the_shopper(
    store,
):
    later = T0 + timedelta(hours=1)
    with HttpSink(fail_first=1) as sink:
        store = with_delivery(store, sms={"backend": "http", "url": sink.url + "/sms"})
        add_users(
            store,
            {"id": "u1", "locale": "en", "unsubscribed_at": T0},  # email refused, SMS fine
            {"id": "u2", "locale": "en", "email_opt_in": False, "sms_opt_in": False},
        )
        for user, decision in (("u1", 901), ("u2", 902)):
            plan_with_offer(store, "email", user, {"creative": "winback"}, decision_id=decision)
            plan(store, "sms", user, {"creative": "winback"}, decision_id=decision)

        first = dispatch(store, T0)
        assert first.outcomes == {"sent": 2, "skipped": 3, "retry": 1}
        coupons = by_user(store)
        assert coupons["u1"]["voided_at"] is None  # its SMS is retried: may still arrive
        assert coupons["u2"]["void_reason"] == "message_skipped:no_consent"

        assert dispatch(store, later).outcomes == {"sent": 1}
        assert len(sink.accepted) == 1
    assert by_user(store)["u1"]["voided_at"] is None


def test_a_coupon_delivered_after_its_message_failed_is_not_issued_live(store):
    """The message's action can come first (its own batch, an earlier retry): then the
    coupon action issues nothing new and is skipped with the reason, and a code the
    failed email had already issued stays void."""
    with SmtpSink(refuse={"u2@example.com"}) as sink:
        store = smtp_store(store, sink)
        add_users(store, {"id": "u1", "unsubscribed_at": T0}, {"id": "u2"})
        for user, decision in (("u1", 801), ("u2", 802)):
            plan(store, "email", user, {"creative": "winback"}, decision_id=decision)
            plan(store, "coupon", user, COUPON, decision_id=decision)

        dispatch(store, T0, batch_size=1)  # one action per batch, email first

    assert [(r["user_id"], r["kind"], r["state"], r["reason"]) for r in outbox_rows(store)] == [
        ("u1", "email", "skipped", "unsubscribed"),
        ("u1", "coupon", "skipped", "message_skipped:unsubscribed"),
        ("u2", "email", "dead", "rejected"),
        ("u2", "coupon", "skipped", "message_dead:rejected"),
    ]
    # u2's email issued its coupon to render it, then was refused by the server.
    assert list(by_user(store)) == ["u2"]
    assert exported(store)["u2"]["void_reason"] == "message_dead:rejected"
    purchase(store, "u2", by_user(store)["u2"]["code"], T0 + timedelta(days=1), 1)
    assert redeem_coupons(store, now=T0 + timedelta(days=1)).counts == {"void": 1}


def test_a_code_lasts_to_the_end_of_the_day_in_the_users_own_zone(store):
    """The day the email prints is the user's local day; so is the code's last day."""
    add_users(store, {"id": "ny", "timezone": "America/New_York"})
    plan(store, "coupon", "ny", {"value": 20, "expires_in": "7d"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    # T0 is 21:00 on 10 November in New York; seven days later is the 17th there.
    assert coupons_of(store)[0]["expires_at"] == datetime(
        2026, 11, 18, 4, 59, 59, 999999, tzinfo=UTC
    )


def test_codes_issued_together_each_last_to_their_own_users_day(store):
    """One batch, the same rule's params, users in different zones and a second rule:
    each code's last day is computed for its own user and its own duration."""
    add_users(
        store,
        {"id": "ny", "timezone": "America/New_York"},
        {"id": "sh", "timezone": "Asia/Shanghai"},
        {"id": "ny2", "timezone": "America/New_York"},
    )
    plan(store, "coupon", "ny", {"value": 20, "expires_in": "7d"})
    plan(store, "coupon", "sh", {"value": 20, "expires_in": "7d"})
    plan(store, "coupon", "ny2", {"value": 20, "expires_in": "1d"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=ChannelSet())
    by_user = {row["user_id"]: row for row in coupons_of(store)}
    # T0 is 21:00 on 10 November in New York and 10:00 on 11 November in Shanghai.
    assert by_user["ny"]["expires_at"] == datetime(2026, 11, 18, 4, 59, 59, 999999, tzinfo=UTC)
    assert by_user["sh"]["expires_at"] == datetime(2026, 11, 18, 15, 59, 59, 999999, tzinfo=UTC)
    assert by_user["ny2"]["expires_at"] == datetime(2026, 11, 12, 4, 59, 59, 999999, tzinfo=UTC)
    assert {row["value"] for row in by_user.values()} == {Decimal("20")}
