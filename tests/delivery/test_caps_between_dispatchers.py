"""Frequency caps hold between dispatchers that send to the same user at the same time.

Two dispatchers (two daemons on one PostgreSQL database, or one daemon and a
`nudge dispatch`) each claim one of a user's actions. Neither has recorded a send when
the other checks the cap, so counting recorded sends alone let both through: a
"one email a day" cap sent two. An action another claim holds counts against the cap
when that claim came first (claimed earlier, or at the same instant with the smaller
holder): whichever way their checks interleave, exactly one of the two is sent.
"""

from __future__ import annotations

from datetime import timedelta

from delivery_helpers import T0, add_users, outbox_rows, plan, with_delivery

from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.dispatcher import dispatch_once

HOOK = {"url": "https://example.com/h"}
CAP = {"webhook": {"max": 1, "per": "1d"}}


class SendsWhile:
    """A channel that, during its first send, lets `meanwhile()` run (another
    dispatcher claiming, checking and sending while this one's send is in flight)."""

    def __init__(self, meanwhile):
        self.meanwhile, self.sent = meanwhile, []

    def send(self, message):
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        self.sent.append(message)

    def close(self):
        pass


def _two_actions(store):
    store = with_delivery(store, caps=CAP)
    add_users(store, {"id": "u1"})
    # Due since an hour ago: every claim below finds them due.
    plan(store, "webhook", "u1", HOOK, at=T0 - timedelta(hours=1))
    plan(store, "webhook", "u1", HOOK, at=T0 - timedelta(hours=1))
    return store


def test_a_second_dispatcher_checking_while_the_first_sends_is_capped(store):
    store = _two_actions(store)
    second = NoopChannel()
    reports = []

    def other_dispatcher():
        channels = ChannelSet({"webhook": second})
        reports.append(
            dispatch_once(store, now=T0, worker_id="w2", channels=channels, batch_size=1)
        )

    first = SendsWhile(other_dispatcher)
    report = dispatch_once(
        store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": first}), batch_size=1
    )

    assert report.outcomes == {"sent": 1}
    assert reports[0].outcomes == {"skipped": 1} and reports[0].reasons == {"capped": 1}
    assert len(first.sent) + len(second.sent) == 1
    assert sorted((r["state"], r["reason"]) for r in outbox_rows(store)) == [
        ("sent", None),
        ("skipped", "capped"),
    ]


def test_two_dispatchers_that_claimed_before_either_checked_send_one(store):
    """Both claims are committed before either dispatcher checks its cap: each sees
    the other's action in flight, and only the later claim gives way."""
    store = _two_actions(store)
    from engine.delivery.claims import claim_batch

    with store.begin() as connection:  # a first claim, made a second earlier
        claim_batch(
            connection,
            now=T0 - timedelta(seconds=1),
            worker_id="w0#early",
            lease_until=T0 + timedelta(minutes=5),
            limit=1,
        )
    # This dispatcher claims the other action and checks while the first is in flight.
    channel = NoopChannel()
    report = dispatch_once(store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": channel}))
    assert report.reasons == {"capped": 1} and channel.sent == []

    # The first claim's holder is not blocked by the later one: with its lease run
    # out, its action is taken over and sent (nothing else is sent or in flight).
    later = T0 + timedelta(minutes=6)
    taken_over = NoopChannel()
    report = dispatch_once(
        store, now=later, worker_id="w2", channels=ChannelSet({"webhook": taken_over})
    )
    assert report.outcomes == {"sent": 1} and len(taken_over.sent) == 1


def test_an_action_held_by_a_crashed_dispatcher_does_not_count(store):
    """An in-flight action whose lease ran out was never sent as far as anyone knows:
    it does not hold the user's slot (it will be taken over and checked again)."""
    store = _two_actions(store)
    from engine.delivery.claims import claim_batch

    with store.begin() as connection:
        claim_batch(
            connection,
            now=T0 - timedelta(minutes=10),
            worker_id="crashed#1",
            lease_until=T0 - timedelta(minutes=5),
            limit=1,
        )
    channel = NoopChannel()
    report = dispatch_once(
        store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": channel}), batch_size=1
    )
    # The crashed claim's action is taken over first and sent; the other is capped.
    assert report.outcomes == {"sent": 1}
    rest = dispatch_once(store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": channel}))
    assert rest.reasons == {"capped": 1} and len(channel.sent) == 1
