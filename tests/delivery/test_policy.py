"""Delivery policy at send time: consent, unsubscribe, caps in priority order, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from delivery_helpers import T0, add_users, outbox_rows, plan, plan_with_offer, with_delivery

from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.config import SendWindow
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.policy import next_window_start
from engine.delivery.status import delivery_status, retry_dead
from engine.delivery.unsubscribe import ensure_tokens, unsubscribe
from engine.store.people import User


def channels():
    return ChannelSet({"email": NoopChannel(), "sms": NoopChannel(), "webhook": NoopChannel()})


def states(store):
    return [(r["user_id"], r["kind"], r["state"], r["reason"]) for r in outbox_rows(store)]


def test_consent_rechecked_at_send_time(store):
    store = with_delivery(store)
    add_users(
        store,
        {"id": "ok"},
        {"id": "no_email", "email_opt_in": False},
        {"id": "no_sms", "sms_opt_in": False},
        {"id": "no_ads", "ads_opt_in": False},
    )
    for user in ("ok", "no_email"):
        plan_with_offer(store, "email", user, {"creative": "winback"})
    plan_with_offer(store, "sms", "no_sms", {"creative": "winback"})
    plan(store, "audience", "no_ads", {"name": "vip"})
    plan_with_offer(store, "email", "ghost", {"creative": "winback"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels())
    # A coupon needs no consent (it is a code on the user's account, not a message).
    assert states(store) == [
        ("ok", "coupon", "sent", None),
        ("ok", "email", "sent", None),
        ("no_email", "coupon", "sent", None),
        ("no_email", "email", "skipped", "no_consent"),
        ("no_sms", "coupon", "sent", None),
        ("no_sms", "sms", "skipped", "no_consent"),
        ("no_ads", "audience", "skipped", "no_consent"),
        ("ghost", "coupon", "skipped", "unknown_user"),
        ("ghost", "email", "skipped", "unknown_user"),
    ]


def test_unsubscribe_between_planning_and_sending_stops_the_email(store):
    store = with_delivery(store)
    add_users(store, {"id": "u1"})
    plan_with_offer(store, "email", "u1", {"creative": "winback"})
    with store.begin() as connection:
        token = ensure_tokens(connection, ["u1"], T0)["u1"]
    assert unsubscribe(store, token, now=T0 + timedelta(minutes=1)) == "u1"
    sink = NoopChannel()
    report = dispatch_until_idle(
        store, now=T0 + timedelta(minutes=2), worker_id="w", channels=ChannelSet({"email": sink})
    )
    assert report.reasons == {"unsubscribed": 1}
    assert sink.sent == []
    assert states(store) == [
        ("u1", "coupon", "sent", None),
        ("u1", "email", "skipped", "unsubscribed"),
    ]
    with store.connect() as connection:
        when = connection.execute(sa.select(User.__table__.c.unsubscribed_at)).scalar()
    assert when == T0 + timedelta(minutes=1)


def test_caps_in_priority_order_skip(store):
    store = with_delivery(store, caps={"email": {"max": 2, "per": "7d"}})
    add_users(store, {"id": "u1"}, {"id": "u2"})
    sent_before = plan_with_offer(
        store, "email", "u1", {"creative": "winback"}, at=T0 - timedelta(days=3)
    )
    dispatch_until_idle(store, now=T0 - timedelta(days=3), worker_id="w", channels=channels())
    low = plan_with_offer(store, "email", "u1", {"creative": "winback"}, priority=10)
    high = plan_with_offer(store, "email", "u1", {"creative": "winback"}, priority=90)
    other = plan_with_offer(store, "email", "u2", {"creative": "winback"}, priority=10)
    report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels())
    assert report.reasons == {"capped": 1}
    rows = outbox_rows(store)
    # Caps count messages on the email channel; the coupon actions are not capped.
    assert {r["state"] for r in rows if r["kind"] == "coupon"} == {"sent"}
    by_id = {r["id"]: (r["state"], r["reason"]) for r in rows if r["kind"] == "email"}
    assert by_id == {
        sent_before: ("sent", None),
        high: ("sent", None),
        low: ("skipped", "capped"),
        other: ("sent", None),
    }
    # Once the first send leaves the 7-day window, a slot is free again.
    later = plan_with_offer(
        store, "email", "u1", {"creative": "winback"}, at=T0 + timedelta(days=4)
    )
    dispatch_until_idle(store, now=T0 + timedelta(days=4), worker_id="w", channels=channels())
    assert {r["id"]: r["state"] for r in outbox_rows(store)}[later] == "sent"


def test_caps_defer_when_configured(store):
    store = with_delivery(store, caps={"sms": {"max": 1, "per": "1d", "when_capped": "defer"}})
    add_users(store, {"id": "u1"})
    plan_with_offer(store, "sms", "u1", {"creative": "winback"}, priority=5)
    second = plan_with_offer(store, "sms", "u1", {"creative": "winback"})
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels())
    row = {r["id"]: r for r in outbox_rows(store)}[second]
    assert (row["state"], row["reason"], row["attempts"]) == ("planned", "capped", 0)
    # The first send happened at T0 (in this same pass), so the slot frees a day later.
    assert row["next_attempt_at"] == T0 + timedelta(days=1)
    dispatch_until_idle(store, now=T0 + timedelta(days=1), worker_id="w", channels=channels())
    assert {r["id"]: r["state"] for r in outbox_rows(store)}[second] == "sent"


def test_quiet_hours_defer_to_the_users_morning(store):
    store = with_delivery(store)
    add_users(store, {"id": "sh"}, {"id": "ny", "timezone": "America/New_York"})
    window = {"send_window": {"between": ["09:00", "21:00"]}}
    plan_with_offer(store, "email", "sh", {"creative": "winback", **window})
    plan_with_offer(store, "email", "ny", {"creative": "winback", **window})
    # T0 = 10:00 in Shanghai (shop zone, inside) and 21:00 in New York (outside).
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels())
    # The planner puts the rule's send window on every action: the coupon waits too.
    morning = datetime(2026, 11, 11, 14, 0, tzinfo=UTC)  # 09:00 EST
    assert [(r["state"], r["reason"], r["next_attempt_at"]) for r in outbox_rows(store)] == [
        ("sent", None, T0),
        ("sent", None, T0),
        ("planned", "quiet_hours", morning),
        ("planned", "quiet_hours", morning),
    ]
    dispatch_until_idle(store, now=morning, worker_id="w", channels=channels())
    assert states(store)[2:] == [("ny", "coupon", "sent", None), ("ny", "email", "sent", None)]


def test_next_window_start_wraps_midnight_and_dst():
    from zoneinfo import ZoneInfo

    night = SendWindow(between=("22:00", "06:00"))
    paris = ZoneInfo("Europe/Paris")
    assert next_window_start(datetime(2026, 3, 28, 23, 0, tzinfo=UTC), night, paris) is None
    # 12:00 UTC = 13:00 Paris: next opening 22:00 Paris (CET, UTC+1) = 21:00 UTC.
    assert next_window_start(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), night, paris) == datetime(
        2026, 3, 28, 21, 0, tzinfo=UTC
    )
    # Across the spring-forward night the offset changes to UTC+2.
    day = SendWindow(between=("09:00", "21:00"))
    assert next_window_start(datetime(2026, 3, 28, 21, 0, tzinfo=UTC), day, paris) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )


def test_status_and_retry(store):
    store = with_delivery(store)
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "nowhere"})
    plan_with_offer(store, "email", "u1", {"creative": "winback"}, at=T0 + timedelta(hours=1))
    dispatch_until_idle(store, now=T0, worker_id="w", channels=channels())
    status = delivery_status(store)
    assert status.counts == {"planned": 2, "claimed": 0, "sent": 0, "skipped": 0, "dead": 1}
    assert status.oldest_pending_at == T0 + timedelta(hours=1)
    assert [(d["kind"], d["reason"], d["last_error"]) for d in status.dead] == [
        ("webhook", "no_endpoint", "no endpoint 'nowhere' in nudge.toml [delivery.webhooks]")
    ]
    store = with_delivery(store, webhooks={"nowhere": {"url": "https://example.com/h"}})
    assert retry_dead(store, now=T0 + timedelta(minutes=5)) == 1
    dispatch_until_idle(store, now=T0 + timedelta(minutes=5), worker_id="w", channels=channels())
    assert delivery_status(store).counts["sent"] == 1


def test_a_policy_needs_only_a_name_and_check(store):
    """A plugin's policy that is not a DeliveryPolicy and has neither `before_batch`
    nor `confirm` (both optional, docs/plugins.md) is asked like the others."""
    from engine.delivery.context import Outcome
    from engine.delivery.dispatcher import dispatch_once
    from engine.delivery.middleware import default_policies

    class OnlyCheck:
        name = "only-check"

        def check(self, ctx, action):
            return Outcome.skipped("held") if action.user_id == "u2" else None

    add_users(store, {"id": "u1"}, {"id": "u2"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    plan(store, "webhook", "u2", {"url": "https://example.com/h"})
    sink = NoopChannel()
    report = dispatch_once(
        store,
        now=T0,
        worker_id="w1",
        channels=ChannelSet({"webhook": sink}),
        policies=[*default_policies(), OnlyCheck()],
    )
    assert report.outcomes == {"sent": 1, "skipped": 1} and report.reasons == {"held": 1}
    assert [m.body["data"]["user_id"] for m in sink.sent] == ["u1"]


def test_a_user_zone_that_is_a_tz_folder_falls_back_to_the_shops(store):
    """Imported before ingest refused it: a stored zone "US" (a folder of the tz
    database) is treated like any unknown zone, the shop's, not a failed batch."""
    store = with_delivery(store)
    add_users(store, {"id": "us", "timezone": "US"})
    window = {"send_window": {"between": ["09:00", "21:00"]}}
    plan(store, "webhook", "us", {"url": "https://example.com/h", **window})
    sink = NoopChannel()
    report = dispatch_until_idle(
        store, now=T0, worker_id="w", channels=ChannelSet({"webhook": sink})
    )
    # T0 is 10:00 in the shop's zone (Asia/Shanghai): inside the window.
    assert report.outcomes == {"sent": 1} and len(sink.sent) == 1
