"""One SMTP connection, pipelined (`[delivery.email] pipelined`, off by default): the next
email is checked and built while the previous one waits for the server
(engine.delivery.channels.parallel.pipeline).

Through the real dispatcher and a real aiosmtpd server: the build-ahead happens, the
emails leave in claim order on the one connection, a failure in the middle is retried
(and only it), a stop leaves nothing sent unrecorded, the GIL switch interval is
shortened only while emails are in flight.
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from email.utils import parsedate_to_datetime

from delivery_helpers import (
    T0,
    Clock,
    add_users,
    outbox_rows,
    plan_with_offer,
    smtp_store,
    with_delivery,
)
from sinks import SmtpSink

from engine.delivery.channels import build_channels
from engine.delivery.channels.parallel import SWITCH_INTERVAL
from engine.delivery.dispatcher import dispatch_until_idle

PIPELINED = {"pipelined": True}
WAIT = 10  # seconds a sink waits for what the test expects (never reached when right)


def _plan_emails(store, count: int) -> list[str]:
    users = [f"u{i}" for i in range(count)]
    add_users(store, *({"id": u, "locale": "en"} for u in users))
    # Descending priority: the claim (and the send) order is u0, u1, ...
    for i, user in enumerate(users):
        plan_with_offer(store, "email", user, {"creative": "winback"}, priority=100 - i)
    return users


def _recipient(message) -> str:
    return message["To"].addresses[0].username


class _TickingClock(Clock):
    """The dispatcher's clock: its k-th reading (from 0) is T0 + k seconds, so an
    email's Date says which reading its last check made."""

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.read = threading.Condition()

    def __call__(self):
        with self.read:
            now = T0 + timedelta(seconds=self.reads)
            self.reads += 1
            self.read.notify_all()
            return now

    def read_after(self, instant, timeout: float) -> bool:
        """Wait until the clock was read again after the reading that gave `instant`."""
        index = int((instant - T0).total_seconds())
        with self.read:
            return self.read.wait_for(lambda: self.reads > index + 1, timeout)


def test_the_next_email_is_checked_while_the_server_answers_the_previous_one(store):
    """While the server holds the first email (before its 250), the dispatcher checks
    the next one (its `before_send` reads the clock) and builds it: one sending thread,
    one message built ahead. Sent one at a time, the dispatcher would be blocked in the
    first send and the clock unread until the server answered."""
    clock = _TickingClock()
    read_while_held = []

    def hold_first(number, message):
        if number == 1:
            date = parsedate_to_datetime(message["Date"])
            read_while_held.append(clock.read_after(date, WAIT))

    with SmtpSink(on_message=hold_first) as sink:
        # Neither the recheck nor the lease falls due while the clock ticks.
        store = smtp_store(store, sink, PIPELINED, recheck="1h", lease="1h")
        users = _plan_emails(store, 4)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, clock=clock, worker_id="w", channels=channels)
            assert channels.get("email").connections_opened == 1
    assert read_while_held == [True]
    assert report.outcomes == {"sent": 8}
    assert [_recipient(m) for m in sink.messages] == users  # claim order, one connection
    dates = [parsedate_to_datetime(m["Date"]) for m in sink.messages]
    assert dates == sorted(dates) and len(set(dates)) == 4  # each checked just before
    assert len(sink.sessions) == 1


class _FailingSink(SmtpSink):
    """Answers the `fail` numbered DATA commands (1-based) with `reply`."""

    def __init__(self, fail: set[int], reply: str, **kwargs):
        super().__init__(**kwargs)
        self.fail, self.reply, self.received = fail, reply, 0

    async def handle_DATA(self, server, session, envelope):
        self.received += 1
        if self.received in self.fail:
            return self.reply
        return await super().handle_DATA(server, session, envelope)


def test_a_temporary_failure_in_the_middle_is_retried_and_the_rest_is_sent(store):
    """The 2nd of 5 emails gets a 451 while the 3rd is already built: the 2nd is
    retried later (and sent then, once), the others are sent once, in order."""
    with _FailingSink({2}, "451 4.3.0 try again later") as sink:
        store = smtp_store(store, sink, PIPELINED, retry={"base": "1m"})
        users = _plan_emails(store, 5)
        with build_channels(store.settings) as channels:
            first = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            states = {r["user_id"]: r for r in outbox_rows(store) if r["kind"] == "email"}
            later = T0 + timedelta(hours=1)
            second = dispatch_until_idle(store, now=later, worker_id="w", channels=channels)
    assert first.outcomes == {"sent": 5 + 4, "retry": 1}
    assert states["u1"]["state"] == "planned"
    assert states["u1"]["last_error"] == "SMTP 451 4.3.0 try again later"
    assert {u for u, r in states.items() if r["state"] == "sent"} == set(users) - {"u1"}
    assert second.outcomes == {"sent": 1}
    assert [_recipient(m) for m in sink.messages] == ["u0", "u2", "u3", "u4", "u1"]
    ids = [m["Message-ID"] for m in sink.messages]
    assert len(set(ids)) == 5
    assert all(r["state"] == "sent" for r in outbox_rows(store))


def test_a_permanent_failure_in_the_middle_is_dead_and_the_rest_is_sent(store):
    with _FailingSink({3}, "554 5.7.1 message refused") as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 5)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    assert report.outcomes == {"sent": 5 + 4, "dead": 1}
    emails = {r["user_id"]: (r["state"], r["last_error"]) for r in outbox_rows(store)}
    assert emails["u2"] == ("dead", "SMTP 554 5.7.1 message refused")
    assert [_recipient(m) for m in sink.messages] == ["u0", "u1", "u3", "u4"]


def test_a_stop_lets_the_email_built_ahead_go_and_releases_the_rest(store):
    """Stop while the server holds the 2nd email: the 2nd and the one already built
    are sent and recorded as sent; no other email is sent; the rest is given back."""
    stop = threading.Event()
    with SmtpSink(on_message=lambda number, _m: number == 2 and stop.set()) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 8)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(
                store, now=T0, worker_id="w", channels=channels, batch_size=20, stop=stop
            )
    sent = report.outcomes["sent"] - 8  # the coupons, delivered before the emails
    assert 2 <= sent <= 3
    assert report.outcomes == {"sent": 8 + sent, "released": 8 - sent}
    recipients = [_recipient(m) for m in sink.messages]
    assert recipients == [f"u{i}" for i in range(sent)]
    emails = {r["user_id"]: r["state"] for r in outbox_rows(store) if r["kind"] == "email"}
    assert emails == {f"u{i}": "sent" if i < sent else "planned" for i in range(8)}


def test_the_switch_interval_is_short_only_while_emails_are_in_flight(store):
    before = sys.getswitchinterval()
    during = []
    with SmtpSink(on_message=lambda _n, _m: during.append(sys.getswitchinterval())) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 2)
        with build_channels(store.settings) as channels:
            dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    assert during and all(value <= SWITCH_INTERVAL + 1e-9 for value in during)
    assert sys.getswitchinterval() == before


def test_one_connection_is_pipelined_when_the_settings_say_so(store):
    with SmtpSink() as sink:
        for settings, pipelined in (({}, False), ({"pipelined": True}, True)):
            configured = with_delivery(
                store,
                email={"backend": "smtp", "host": "127.0.0.1", "port": sink.port, **settings},
            )
            with build_channels(configured.settings) as channels:
                assert channels.get("email").pipelined is pipelined
