"""A claimed batch is sent in small sub-batches, each re-checked just before it goes:
consent, unsubscribes and the rule's `unless` that change while a batch is being sent
stop its remaining messages (issue 9); caps still count across sub-batches.
"""

from __future__ import annotations

from datetime import timedelta

from delivery_helpers import (
    T0,
    Clock,
    add_users,
    outbox_rows,
    plan,
    plan_with_offer,
    smtp_store,
    with_delivery,
)
from sinks import HttpSink, SmtpSink

from engine.delivery.channels import ChannelSet, NoopChannel, build_channels
from engine.delivery.channels.http import HttpChannel
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.unsubscribe import ensure_tokens, unsubscribe


def test_an_unsubscribe_committed_mid_batch_stops_the_rest_of_the_batch(store):
    """25 emails in one claimed batch (500); while the 2nd is being accepted, u23
    unsubscribes through the real one-click path. Sub-batches of 20 outbox rows (10
    coupon + email pairs) re-read consent, so u23's email is skipped, not sent."""
    users = [f"u{i:02d}" for i in range(25)]
    tokens = {}

    def unsubscribe_u23(number, message):
        if number == 2:
            assert unsubscribe(store, tokens["u23"], now=T0) == "u23"

    with SmtpSink(on_message=unsubscribe_u23) as sink:
        store = smtp_store(store, sink)
        add_users(store, *({"id": u, "locale": "en"} for u in users))
        for user in users:
            plan_with_offer(store, "email", user, {"creative": "winback"})
        with store.begin() as connection:
            tokens.update(ensure_tokens(connection, users, T0))
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)

    assert report.claimed == 50
    emails = {r["user_id"]: r for r in outbox_rows(store) if r["kind"] == "email"}
    assert (emails["u23"]["state"], emails["u23"]["reason"]) == ("skipped", "unsubscribed")
    assert {u for u, r in emails.items() if r["state"] == "sent"} == set(users) - {"u23"}
    recipients = {m["To"].addresses[0].username for m in sink.messages}
    assert recipients == set(users) - {"u23"} and len(sink.messages) == 24
    # The coupon u23 never saw is voided.
    with store.connect() as connection:
        void = connection.exec_driver_sql(
            "SELECT void_reason FROM coupons WHERE user_id = 'u23'"
        ).scalar_one()
    assert void == "message_skipped:unsubscribed"


def test_a_slow_channel_is_rechecked_every_few_seconds(store):
    """However slow the channel, consent is re-read within about `recheck` (2s): with
    each email taking a second, an unsubscribe committed during the first email stops
    the 5th, though all 6 fit in the first sub-batch (20 rows)."""
    users = [f"u{i}" for i in range(6)]
    clock = Clock()
    tokens = {}

    def slow_and_unsubscribe(number, message):
        clock.advance(timedelta(seconds=1))
        if number == 1:
            unsubscribe(store, tokens["u4"], now=clock())

    with SmtpSink(on_message=slow_and_unsubscribe) as sink:
        store = smtp_store(store, sink)
        add_users(store, *({"id": u, "locale": "en"} for u in users))
        for user in users:
            plan_with_offer(store, "email", user, {"creative": "winback"})
        with store.begin() as connection:
            tokens.update(ensure_tokens(connection, users, T0))
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, clock=clock, worker_id="w", channels=channels)
    assert report.claimed == 12
    emails = {
        r["user_id"]: (r["state"], r["reason"]) for r in outbox_rows(store) if r["kind"] == "email"
    }
    assert emails == {u: ("sent", None) for u in users} | {"u4": ("skipped", "unsubscribed")}
    assert len(sink.messages) == 5


def test_caps_count_across_sub_batches(store):
    """A cap slot used in the first sub-batch of a batch counts in the second."""
    store = with_delivery(store, sub_batch_size=2, caps={"webhook": {"max": 2, "per": "7d"}})
    add_users(store, {"id": "u1"}, {"id": "u2"})
    first = plan(store, "webhook", "u1", {"url": "https://example.com/h"}, priority=9)
    second = plan(store, "webhook", "u1", {"url": "https://example.com/h"}, priority=8)
    third = plan(store, "webhook", "u1", {"url": "https://example.com/h"}, priority=7)
    other = plan(store, "webhook", "u2", {"url": "https://example.com/h"}, priority=7)
    fourth = plan(store, "webhook", "u1", {"url": "https://example.com/h"}, priority=1)
    sink = NoopChannel()
    report = dispatch_until_idle(
        store, now=T0, worker_id="w", channels=ChannelSet({"webhook": sink})
    )
    assert report.claimed == 5
    states = {r["id"]: (r["state"], r["reason"]) for r in outbox_rows(store)}
    assert states == {
        first: ("sent", None),
        second: ("sent", None),
        third: ("skipped", "capped"),
        other: ("sent", None),
        fourth: ("skipped", "capped"),
    }
    assert len(sink.sent) == 3


def test_caps_defer_counts_across_sub_batches(store):
    store = with_delivery(
        store,
        sub_batch_size=1,
        caps={"webhook": {"max": 1, "per": "1d", "when_capped": "defer"}},
    )
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"}, priority=5)
    later = plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    dispatch_until_idle(
        store, now=T0, worker_id="w", channels=ChannelSet({"webhook": NoopChannel()})
    )
    row = {r["id"]: r for r in outbox_rows(store)}[later]
    assert (row["state"], row["reason"], row["attempts"]) == ("planned", "capped", 0)
    assert row["next_attempt_at"] == T0 + timedelta(days=1)


def test_the_rules_unless_is_rechecked_per_sub_batch(store, settings, tmp_path):
    """A purchase ingested while a batch of webhooks is being sent stops that user's
    webhook later in the same batch (`unless`), as it would have stopped it at planning."""
    from datetime import UTC, datetime

    from engine.planning.runner import evaluate
    from tests.planning.helpers import ingest, ruleset_for, write_rule

    now = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    users = [f"u{i:02d}" for i in range(25)]
    late = {}

    def buy_again(number, request):
        if number == 2:
            purchase = {"user": late["user"], "type": "purchase", "at": now.isoformat()}
            ingest(store, tmp_path, now=now, events=[{**purchase, "amount": 10}])

    with HttpSink(on_request=buy_again) as sink:
        write_rule(
            settings,
            "thanks",
            "trigger: {stage: first_purchase}\n"
            "unless: purchase_count >= 2\n"
            f"actions:\n  webhook: {{url: '{sink.url}/hook'}}\n",
        )
        ingest(
            store,
            tmp_path,
            now=now,
            users=[{"id": u} for u in users],
            events=[
                {
                    "user": u,
                    "type": "purchase",
                    "at": (now - timedelta(hours=1)).isoformat(),
                    "amount": 10,
                }
                for u in users
            ],
        )
        assert evaluate(store, ruleset_for(settings), at=now).outcomes[0].planned == 25
        # One batch of 25, sent in sub-batches of 20 and 5 (in id order, the planner's):
        # the user of the last row buys again while the first sub-batch is being sent.
        late["user"] = outbox_rows(store)[-1]["user_id"]
        report = dispatch_until_idle(
            store,
            now=now + timedelta(minutes=1),
            worker_id="w",
            channels=ChannelSet({"webhook": HttpChannel(timeout=10)}),
        )
    assert report.claimed == 25
    rows = {r["user_id"]: (r["state"], r["reason"]) for r in outbox_rows(store)}
    assert rows[late["user"]] == ("skipped", "unless")
    assert {u for u, s in rows.items() if s == ("sent", None)} == set(users) - {late["user"]}
    assert len(sink.requests) == 24
