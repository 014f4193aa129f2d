"""SMS numbers go through the same normaliser as audiences (engine/phones.py): each is
read in its user's country, and an invalid one is skipped with a reason, never sent."""

from __future__ import annotations

from delivery_helpers import T0, add_users, outbox_rows, plan_with_offer, with_delivery
from sinks import HttpSink

from engine.delivery.channels import ChannelSet
from engine.delivery.channels.http import HttpChannel
from engine.delivery.dispatcher import dispatch_until_idle


def test_sms_goes_to_the_number_in_the_users_country_or_is_skipped(store):
    with HttpSink() as sink:
        store = with_delivery(store, sms={"backend": "http", "url": sink.url + "/sms"})
        add_users(
            store,
            {"id": "us", "phone": "1 800 555 0100", "country": "US", "locale": "en"},
            {"id": "it", "phone": "06 1234 5678", "country": "IT", "locale": "en"},
            {"id": "cn", "phone": "138 0013 8000", "country": None, "locale": "en"},
            {"id": "short", "phone": "12345", "country": "CN", "locale": "en"},
            {"id": "words", "phone": "ask at the desk", "country": "US", "locale": "en"},
        )
        for user_id in ("us", "it", "cn", "short", "words"):
            plan_with_offer(store, "sms", user_id, {"creative": "winback"})
        report = dispatch_until_idle(
            store, now=T0, worker_id="w", channels=ChannelSet({"sms": HttpChannel(timeout=10)})
        )
        assert report.outcomes == {"sent": 5 + 3, "skipped": 2}  # 5 coupons, 3 SMS
        assert report.reasons == {"invalid_phone": 2}
        sent = {body["data"]["user_id"]: body["data"]["to"] for body in sink.accepted.values()}
        assert sent == {"us": "+18005550100", "it": "+390612345678", "cn": "+8613800138000"}

    skipped = {
        r["user_id"]: (r["reason"], r["last_error"])
        for r in outbox_rows(store)
        if r["kind"] == "sms" and r["state"] == "skipped"
    }
    assert skipped == {
        "short": ("invalid_phone", "'12345' is not a valid phone number (read as +8612345)"),
        "words": ("invalid_phone", "'ask at the desk' is not a phone number"),
    }
