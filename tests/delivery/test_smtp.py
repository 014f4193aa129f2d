"""Email through a real SMTP server (aiosmtpd on 127.0.0.1): headers, bodies, one per action."""

from __future__ import annotations

import re

from delivery_helpers import T0, add_users, outbox_rows, plan, with_delivery
from sinks import SmtpSink

from engine.delivery.channels import ChannelSet, build_channels
from engine.delivery.channels.smtp import SmtpChannel
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.email_message import message_id
from engine.delivery.unsubscribe import unsubscribe


def smtp_store(store, sink):
    return with_delivery(
        store,
        email={
            "backend": "smtp",
            "host": "127.0.0.1",
            "port": sink.port,
            "from_address": "hello@shop.example.com",
            "unsubscribe_url": "https://shop.example.com/u/{token}",
        },
    )


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
        plan(store, "email", "u2", {"creative": "winback"}, decision_id=8)
        with build_channels(store.settings) as channels:
            smtp = channels.get("email")
            assert isinstance(smtp, SmtpChannel)
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            assert smtp.connections_opened == 1  # pooled: one connection for the batch
        assert report.outcomes == {"sent": 3}
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
            code = connection.exec_driver_sql("SELECT code FROM coupons").scalar_one()
        assert code in text and code in html
        assert first["X-Nudge-Key"] == key
        # The token in the link unsubscribes exactly that user.
        assert unsubscribe(store, token.group(1), now=T0) == "u1"


def test_smtp_rejection_is_dead_and_the_rest_still_goes(store):
    with SmtpSink(refuse={"bad@example.com"}) as sink:
        store = smtp_store(store, sink)
        add_users(store, {"id": "bad", "email": "bad@example.com"}, {"id": "good"})
        plan(store, "email", "bad", {"creative": "winback"})
        plan(store, "email", "good", {"creative": "winback"})
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
        assert report.outcomes == {"dead": 1, "sent": 1}
        rows = outbox_rows(store)
        assert (rows[0]["state"], rows[0]["reason"]) == ("dead", "rejected")
        assert rows[0]["last_error"] == "SMTP 550 5.1.1 no such user"
        assert [str(m["To"]) for m in sink.messages] == ["good@example.com"]


def test_server_down_is_retried(store):
    store = with_delivery(
        store, email={"backend": "smtp", "host": "127.0.0.1", "port": 9}, retry={"base": "1m"}
    )
    add_users(store, {"id": "u1"})
    plan(store, "email", "u1", {"creative": "winback"})
    channels = ChannelSet({"email": SmtpChannel("127.0.0.1", 9, timeout=5)})
    report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    assert report.outcomes == {"retry": 1}
    row = outbox_rows(store)[0]
    assert row["state"] == "planned" and row["last_error"].startswith("SMTP 127.0.0.1:9: ")
