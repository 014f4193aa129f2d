"""Frequency caps hold between dispatchers that send to the same user at the same time.

Two dispatchers (two daemons on one PostgreSQL database, `[delivery] dispatchers = 2`,
or a daemon and `nudge dispatch`) each claim one of a user's actions. Counting the
sends recorded so far let both through a "one a day" cap when neither had recorded
its own yet. Now an action that passed every check reserves its slot before it is
sent, in a transaction serialised with the other dispatchers' reservations; a
reserved action counts as sent until it is recorded (or its claim's lease runs out).
Whichever order the dispatchers claim, check and send in, and whatever their clocks
say, one of the two is sent.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from delivery_helpers import T0, add_users, outbox_rows, plan, with_delivery

from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.claims import claim_batch
from engine.delivery.dispatcher import dispatch_once, dispatch_until_idle
from engine.store.planning import OutboxAction

HOOK = {"url": "https://example.com/h"}
CAP = {"webhook": {"max": 1, "per": "1d"}}
outbox = OutboxAction.__table__


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


def _two_actions(store, first: dict = HOOK, first_priority: int = 0):
    store = with_delivery(store, caps=CAP)
    add_users(store, {"id": "u1"})
    # Due since an hour ago: every claim below finds them due.
    plan(store, "webhook", "u1", first, priority=first_priority, at=T0 - timedelta(hours=1))
    plan(store, "webhook", "u1", HOOK, at=T0 - timedelta(hours=1))
    return store


def _claim_one(store, holder: str, *, at) -> None:
    """Another dispatcher claims the first due action at `at` (lease: 5 minutes) and
    has not checked it yet."""
    with store.begin() as connection:
        claim_batch(
            connection, now=at, worker_id=holder, lease_until=at + timedelta(minutes=5), limit=1
        )


@pytest.mark.parametrize(
    ("first_worker", "second_worker", "second_clock"),
    [
        ("w1", "w2", timedelta(0)),
        ("w2", "w1", timedelta(0)),  # the one that checks second has the smaller name
        ("w1", "w2", -timedelta(seconds=1)),  # and a clock a second behind the first's
    ],
    ids=["in-order", "names-swapped", "clock-behind"],
)
def test_a_second_dispatcher_checking_while_the_first_sends_is_capped(
    store, first_worker, second_worker, second_clock
):
    store = _two_actions(store)
    second = NoopChannel()
    reports = []

    def other_dispatcher():
        channels = ChannelSet({"webhook": second})
        now = T0 + second_clock
        reports.append(
            dispatch_once(store, now=now, worker_id=second_worker, channels=channels, batch_size=1)
        )

    first = SendsWhile(other_dispatcher)
    channels = ChannelSet({"webhook": first})
    report = dispatch_once(store, now=T0, worker_id=first_worker, channels=channels, batch_size=1)

    assert report.outcomes == {"sent": 1}
    assert reports[0].outcomes == {"skipped": 1} and reports[0].reasons == {"capped": 1}
    assert len(first.sent) + len(second.sent) == 1
    assert sorted((r["state"], r["reason"]) for r in outbox_rows(store)) == [
        ("sent", None),
        ("skipped", "capped"),
    ]
    assert [r["cap_reserved_at"] for r in outbox_rows(store)] == [None, None]


def test_a_claim_that_has_not_checked_yet_takes_no_slot(store):
    """Another dispatcher claimed one action and has not checked it: this one's action
    is sent; the other, when checked (here after its lease ran out and it was taken
    over), finds the slot taken."""
    store = _two_actions(store)
    _claim_one(store, "w0#early", at=T0 - timedelta(seconds=1))
    channel = NoopChannel()
    report = dispatch_once(store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": channel}))
    assert report.outcomes == {"sent": 1} and len(channel.sent) == 1

    later = T0 + timedelta(minutes=6)
    report = dispatch_once(
        store, now=later, worker_id="w2", channels=ChannelSet({"webhook": channel})
    )
    assert report.reasons == {"capped": 1} and len(channel.sent) == 1


def test_an_action_held_back_by_its_own_checks_leaves_the_slot_to_the_other(store):
    """The first dispatcher has claimed its action (higher priority, due in an evening
    window: 10:00 in Shanghai now) and is checking it when the second dispatcher runs:
    the first's action has not passed its checks, so it holds no slot, and the second's
    is sent; the first's is deferred to the evening."""
    evening = dict(HOOK, send_window={"between": ["20:00", "21:00"]})
    store = _two_actions(store, first=evening, first_priority=5)
    second = NoopChannel()
    reports = []

    def second_runs_meanwhile(conn, cursor, statement, parameters, context, executemany):
        if "lease_until >=" in statement and not reports:
            reports.append(None)  # once: the second dispatcher counts slots too
            channels = ChannelSet({"webhook": second})
            reports.append(dispatch_once(store, now=T0, worker_id="w2", channels=channels))

    sa.event.listen(store.engine, "before_cursor_execute", second_runs_meanwhile)
    try:
        first = NoopChannel()
        channels = ChannelSet({"webhook": first})
        report = dispatch_once(store, now=T0, worker_id="w1", channels=channels, batch_size=1)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", second_runs_meanwhile)
    assert report.outcomes == {"deferred": 1} and first.sent == []
    assert reports[1].outcomes == {"sent": 1} and len(second.sent) == 1


def test_a_send_recorded_while_the_slots_are_counted_is_counted_once(store):
    """The other dispatcher records its send just as this one counts the slots (its
    statement runs first): counted as sent, never missed between two reads."""
    store = _two_actions(store)
    _claim_one(store, "w0#early", at=T0 - timedelta(seconds=1))
    recorded = []

    def record_first(conn, cursor, statement, parameters, context, executemany):
        if "lease_until >=" in statement and not recorded:
            recorded.append(True)
            with store.engine.connect() as other:
                other.execute(
                    sa.update(outbox)
                    .where(outbox.c.claimed_by == "w0#early")
                    .values(state="sent", sent_at=T0, lease_until=None, updated_at=T0)
                )
                other.commit()

    sa.event.listen(store.engine, "before_cursor_execute", record_first)
    try:
        channel = NoopChannel()
        report = dispatch_once(
            store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": channel})
        )
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record_first)
    assert recorded and report.reasons == {"capped": 1} and channel.sent == []


def test_an_action_held_by_a_crashed_dispatcher_does_not_count(store):
    """A reserved action whose lease ran out was never recorded as sent: it does not
    hold the user's slot (it is taken over, and checked again, first)."""
    store = _two_actions(store)
    _claim_one(store, "crashed#1", at=T0 - timedelta(minutes=10))  # lease ends at T0 - 5m
    with store.begin() as connection:
        connection.execute(
            sa.update(outbox)
            .where(outbox.c.claimed_by == "crashed#1")
            .values(cap_reserved_at=T0 - timedelta(minutes=10))
        )
    channel = NoopChannel()
    report = dispatch_until_idle(
        store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": channel}), batch_size=1
    )
    assert report.outcomes == {"sent": 1, "skipped": 1} and len(channel.sent) == 1
    taken_over = [r for r in outbox_rows(store) if r["attempts"] == 2]
    assert [(r["state"], r["cap_reserved_at"]) for r in taken_over] == [("sent", None)]
