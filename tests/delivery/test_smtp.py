"""Email through a real SMTP server (aiosmtpd on 127.0.0.1): headers, bodies, one per action."""

from __future__ import annotations

import re

from delivery_helpers import (
    T0,
    add_users,
    outbox_rows,
    plan,
    plan_with_offer,
    smtp_store,
    with_delivery,
)
from sinks import SmtpSink

from engine.delivery.channels import ChannelSet, build_channels
from engine.delivery.channels.smtp import SmtpChannel
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.email_message import message_id
from engine.delivery.unsubscribe import unsubscribe


def test_one_message_per_action_with_headers_and_parts(store):
    with SmtpSink() as sink:
        store = smtp_store(store, sink)
        add_users(
            store,
            {"id": "u1", "name": "Ada Lovelace", "locale": "en"},
            {"id": "u2", "locale": "zh-CN"},
        )
        plan(store, "coupon", "u1", {"value": 20, "expires_in": "14d"}, decision_id=7)
        plan(store, "email", "u1", {"creative": "winback"}, decision_id=7)
        plan_with_offer(store, "email", "u2", {"creative": "winback"}, coupon={"percent_off": 15})
        with build_channels(store.settings) as channels:
            smtp = channels.get("email")
            assert isinstance(smtp, SmtpChannel)
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            assert smtp.connections_opened == 1  # pooled: one connection for the batch
        assert report.outcomes == {"sent": 4}
        rows = {r["user_id"] + r["kind"]: r for r in outbox_rows(store)}
        assert len(sink.messages) == 2
        first = next(m for m in sink.messages if m["To"].addresses[0].username == "u1")
        key = rows["u1email"]["idempotency_key"]
        assert first["Message-ID"].strip() == message_id(key, "hello@shop.example.com")
        assert first["Message-ID"].strip() == f"<{key}@shop.example.com>"
        assert str(first["To"]) == "Ada Lovelace <u1@example.com>"
        assert str(first["From"]) == "Test Shop <hello@shop.example.com>"
        assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        token = re.fullmatch(
            r"<https://shop\.example\.com/u/([\w-]+)>", first["List-Unsubscribe"].strip()
        )
        assert token is not None
        assert first.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in first.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        text = first.get_body(("plain",)).get_content()
        html = first.get_body(("html",)).get_content()
        # The coupon of the same decision is issued once and shown in both parts.
        with store.connect() as connection:
            code = connection.exec_driver_sql(
                "SELECT code FROM coupons WHERE user_id = 'u1'"
            ).scalar_one()
        assert code in text and code in html
        assert first["X-Nudge-Key"] == key
        # The token in the link unsubscribes exactly that user.
        assert unsubscribe(store, token.group(1), now=T0) == "u1"


def test_smtp_rejection_is_dead_and_the_rest_still_goes(store):
    with SmtpSink(refuse={"bad@example.com"}) as sink:
        store = smtp_store(store, sink)
        add_users(store, {"id": "bad", "email": "bad@example.com"}, {"id": "good"})
        bad = plan_with_offer(store, "email", "bad", {"creative": "winback"})
        plan_with_offer(store, "email", "good", {"creative": "winback"})
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
        # Two coupons issued, one email sent, one refused.
        assert report.outcomes == {"dead": 1, "sent": 3}
        row = {r["id"]: r for r in outbox_rows(store)}[bad]
        assert (row["state"], row["reason"]) == ("dead", "rejected")
        assert row["last_error"] == "SMTP 550 5.1.1 no such user"
        assert [str(m["To"]) for m in sink.messages] == ["good@example.com"]


def test_server_down_is_retried(store):
    store = with_delivery(
        store, email={"backend": "smtp", "host": "127.0.0.1", "port": 9}, retry={"base": "1m"}
    )
    add_users(store, {"id": "u1"})
    email = plan_with_offer(store, "email", "u1", {"creative": "winback"})
    channels = ChannelSet({"email": SmtpChannel("127.0.0.1", 9, timeout=5)})
    report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    assert report.outcomes == {"sent": 1, "retry": 1}  # the coupon is issued; the email waits
    row = {r["id"]: r for r in outbox_rows(store)}[email]
    assert row["state"] == "planned" and row["last_error"].startswith("SMTP 127.0.0.1:9: ")


def test_coupon_creative_without_a_coupon_is_skipped_never_sent(store):
    """A winback email whose decision has no coupon action has no discount to state: the
    template aborts, so the message is skipped rather than sent with a blank amount."""
    with SmtpSink() as sink:
        store = smtp_store(store, sink)
        add_users(store, {"id": "en", "locale": "en"}, {"id": "zh", "locale": "zh-CN"})
        plan(store, "email", "en", {"creative": "winback"})
        plan(store, "email", "zh", {"creative": "winback"})
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
        # The outbox reason keeps the first 64 characters of "template: <abort reason>".
        reason = "template: no discount to show: the rule needs a coupon action wi"
        assert report.outcomes == {"skipped": 2}
        assert report.reasons == {reason: 2}
        assert [(r["user_id"], r["state"], r["reason"]) for r in outbox_rows(store)] == [
            ("en", "skipped", reason),
            ("zh", "skipped", reason),
        ]
        assert sink.messages == []
        with store.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM coupons").scalar_one() == 0
