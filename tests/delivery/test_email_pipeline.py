"""One SMTP connection, pipelined (`[delivery.email] pipelined`, on by default): the
server works on one email while the dispatcher builds the next, and with a server that
offers PIPELINING (RFC 2920) each email's content and the next one's MAIL, RCPT and
DATA leave in one write (engine.delivery.channels.smtp_pipeline).

Through the real dispatcher and a real aiosmtpd server, offering PIPELINING and not:
the build-ahead happens, the emails leave in claim order on the one connection with
the bytes and envelope that one-at-a-time sending gives them, a failure in the middle
(content refused, recipient refused, connection lost) concerns only the emails it
hit, a stop leaves nothing sent unrecorded, a connection the server closed while idle
is replaced before anything is written to it.
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest
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

from engine.delivery.channels import OutgoingEmail, build_channels
from engine.delivery.channels.smtp import SmtpChannel
from engine.delivery.context import PermanentDeliveryError
from engine.delivery.dispatcher import dispatch_until_idle
from engine.delivery.email_wire import WireEmail
from engine.delivery.runner import run_dispatchers

PIPELINED = {"pipelined": True}
WAIT = 10  # seconds a sink waits for what the test expects (never reached when right)
# The server offers PIPELINING (one exchange per email) or not (one per command).
SERVERS = pytest.mark.parametrize("offers", [True, False], ids=["PIPELINING", "no-PIPELINING"])


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

    def read_after(self, instant, timeout: float, times: int = 1) -> bool:
        """Wait until the clock was read `times` more after the reading that gave
        `instant`."""
        index = int((instant - T0).total_seconds())
        with self.read:
            return self.read.wait_for(lambda: self.reads > index + times, timeout)


@SERVERS
def test_the_next_emails_are_checked_while_the_server_answers_the_previous_one(store, offers):
    """While the server holds the first email (before its 250), the dispatcher checks
    the next one (its `before_send` reads the clock) and builds it; when the server
    offers PIPELINING, the one after that too (the second's envelope left with the
    first's content). Sent one at a time, the dispatcher would be blocked in the
    first send and the clock unread until the server answered."""
    clock = _TickingClock()
    read_while_held = []
    ahead = 2 if offers else 1

    def hold_first(number, message):
        if number == 1:
            date = parsedate_to_datetime(message["Date"])
            read_while_held.append(clock.read_after(date, WAIT, times=ahead))

    with SmtpSink(on_message=hold_first, pipelining=offers) as sink:
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


@SERVERS
def test_a_temporary_failure_in_the_middle_is_retried_and_the_rest_is_sent(store, offers):
    """The 2nd of 5 emails gets a 451 while the 3rd is already built: the 2nd is
    retried later (and sent then, once), the others are sent once, in order."""
    with _FailingSink({2}, "451 4.3.0 try again later", pipelining=offers) as sink:
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


@SERVERS
def test_a_permanent_failure_in_the_middle_is_dead_and_the_rest_is_sent(store, offers):
    with _FailingSink({3}, "554 5.7.1 message refused", pipelining=offers) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 5)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    assert report.outcomes == {"sent": 5 + 4, "dead": 1}
    emails = {r["user_id"]: (r["state"], r["last_error"]) for r in outbox_rows(store)}
    assert emails["u2"] == ("dead", "SMTP 554 5.7.1 message refused")
    assert [_recipient(m) for m in sink.messages] == ["u0", "u1", "u3", "u4"]


@SERVERS
def test_a_refused_recipient_in_the_middle_is_dead_and_the_rest_is_sent(store, offers):
    """The 3rd email's recipient is refused (550 to its RCPT, which with PIPELINING
    left in one write with the 2nd email's content): it is dead with the server's
    reply, the transaction is reset, and the 4th and 5th go out on the same
    connection."""
    with SmtpSink(refuse={"u2@example.com"}, pipelining=offers) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 5)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            assert channels.get("email").connections_opened == 1
    assert report.outcomes == {"sent": 5 + 4, "dead": 1}
    emails = {r["user_id"]: (r["state"], r["last_error"]) for r in outbox_rows(store)}
    assert emails["u2"] == ("dead", "SMTP 550 5.1.1 no such user")
    assert [_recipient(m) for m in sink.messages] == ["u0", "u1", "u3", "u4"]
    assert len(sink.sessions) == 1


class _DroppingSink(SmtpSink):
    """Closes the connection instead of answering the `drop_at` numbered message
    (1-based), which it does not keep: the client never learns what became of it."""

    def __init__(self, drop_at: int, **kwargs):
        super().__init__(**kwargs)
        self.drop_at, self.received = drop_at, 0

    async def handle_DATA(self, server, session, envelope):
        self.received += 1
        if self.received == self.drop_at:
            server.transport.close()
            return "421 4.3.2 closing"
        return await super().handle_DATA(server, session, envelope)


@SERVERS
def test_a_lost_connection_retries_only_the_emails_without_a_verdict(store, offers):
    """The server drops the connection while the 3rd email's 250 is owed (and, with
    PIPELINING, the 4th's envelope's replies): those have no verdict and are retried
    later; the 1st and 2nd are sent and recorded; the emails after them go out on a
    new connection at once; the retry sends each missing email once."""
    with _DroppingSink(3, pipelining=offers) as sink:
        store = smtp_store(store, sink, PIPELINED, retry={"base": "1m"})
        users = _plan_emails(store, 5)
        with build_channels(store.settings) as channels:
            first = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            retried = {r["user_id"] for r in outbox_rows(store) if r["state"] == "planned"}
            later = T0 + timedelta(hours=1)
            second = dispatch_until_idle(store, now=later, worker_id="w", channels=channels)
            opened = channels.get("email").connections_opened
    assert retried == ({"u2", "u3"} if offers else {"u2"})
    assert first.outcomes == {"sent": 5 + 5 - len(retried), "retry": len(retried)}
    assert second.outcomes == {"sent": len(retried)}
    assert sorted(_recipient(m) for m in sink.messages) == users
    assert len({m["Message-ID"] for m in sink.messages}) == 5  # none twice
    assert opened == 2
    assert all(r["state"] == "sent" for r in outbox_rows(store))


@SERVERS
def test_an_unreadable_reply_retries_only_the_emails_waiting_on_it(store, offers):
    """The server answers the 2nd email's content with a line longer than SMTP allows
    (smtplib refuses to read it): the 2nd (and, with PIPELINING, the 3rd, whose
    envelope was answered after it) is retried, not dead, and the others are sent."""
    with _FailingSink({2}, "451 " + "x" * 9000, pipelining=offers) as sink:
        store = smtp_store(store, sink, PIPELINED, retry={"base": "1m"})
        _plan_emails(store, 5)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    retried = {r["user_id"] for r in outbox_rows(store) if r["state"] == "planned"}
    assert retried == ({"u1", "u2"} if offers else {"u1"})
    assert report.outcomes == {"sent": 5 + 5 - len(retried), "retry": len(retried)}


@SERVERS
@pytest.mark.parametrize("farewell", [None, "421 4.4.2 idle timeout"], ids=["silent", "421"])
def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(store, offers, farewell):
    """The server closes the kept-open connection between two batches (silently, or
    saying 421 first as Postfix and Exim do): the next batch finds out by a NOOP
    before writing anything, opens a new connection and sends everything, with no
    retry."""
    with SmtpSink(pipelining=offers) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 2)
        with build_channels(store.settings) as channels:
            first = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            sink.drop_connections(farewell)
            for i, user in enumerate(["v0", "v1"]):
                add_users(store, {"id": user, "locale": "en"})
                plan_with_offer(store, "email", user, {"creative": "winback"}, priority=9 - i)
            second = dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
            assert channels.get("email").connections_opened == 2
    assert first.outcomes == {"sent": 4}
    assert second.outcomes == {"sent": 4}
    assert [_recipient(m) for m in sink.messages] == ["u0", "u1", "v0", "v1"]


def test_dispatchers_sharing_one_channel_set_each_pipeline_on_a_connection_of_their_own(
    store,
):
    """Two dispatchers on threads, one ChannelSet between them (run_dispatchers'
    `channels`): every email is sent once, to its own recipient, and recorded sent."""
    with SmtpSink(pipelining=True) as sink:
        store = smtp_store(store, sink, PIPELINED, batch_size=4)  # both kept busy
        users = _plan_emails(store, 40)
        with build_channels(store.settings) as channels:
            report = run_dispatchers(store, dispatchers=2, once=True, at=T0, channels=channels)
            assert channels.get("email").connections_opened == 2
    assert report.outcomes == {"sent": 80}
    assert len(sink.sessions) == 2
    workers = {r["claimed_by"].split("#")[0] for r in outbox_rows(store) if r["kind"] == "email"}
    assert len(workers) == 2
    assert sorted(_recipient(m) for m in sink.messages) == sorted(users)
    keys = {r["user_id"]: r["idempotency_key"] for r in outbox_rows(store) if r["kind"] == "email"}
    for message in sink.messages:  # each body went to the user it was built for
        assert keys[_recipient(message)] in message["Message-ID"]
    assert all(r["state"] == "sent" for r in outbox_rows(store))


def _outgoing(number: int, body: bytes, sender: str, to: str) -> OutgoingEmail:
    data = b"Message-ID: <%d@test>\r\nSubject: n%d\r\n\r\n" % (number, number) + body
    wire = WireEmail(sender, (to,), data)
    return OutgoingEmail(f"k{number}", build=lambda: None, build_wire=lambda: wire)


def _standard(number: int, to: str) -> OutgoingEmail:
    """A message with no wire form: sent by send_message, one at a time."""
    message = EmailMessage()
    message["From"], message["To"] = "shop@example.com", f"Ann Example <{to}>"
    message["Message-ID"], message["Subject"] = f"<{number}@test>", f"n{number}"
    message.set_content("sent by send_message\n")
    return OutgoingEmail(f"k{number}", message)


@SERVERS
def test_pipelined_sends_deliver_what_one_at_a_time_sends_deliver(offers):
    """The same messages through the pipeline and through `send` (smtplib's sendmail):
    the server receives the same envelopes, MAIL parameters and bytes (leading dots
    and all) in the same order; a refused sender and a refused recipient are refused
    alike, and the emails after them are sent on the same connection."""
    bodies = [
        b"plain line\r\n",
        b".starts with a dot\r\n..two dots\r\nmiddle\r\n.\r\nend\r\n",
        b"no final line break",
        b"refused\r\n",
        b"refused too\r\n",
        (b"x" * 76 + b"\r\n") * 70,
    ]
    shop = "shop@example.com"
    addresses = [
        (shop, "a@example.com"),
        (shop, "b@example.com"),
        (shop, "c@example.com"),
        (shop, "refused@example.com"),
        ("refused@example.com", "d@example.com"),
        (shop, "e@example.com"),
    ]
    refused = {"refused@example.com"}
    received = {}
    for how in ("pipeline", "send"):
        with SmtpSink(refuse=refused, pipelining=offers) as sink:
            channel = SmtpChannel("127.0.0.1", sink.port)
            pairs = enumerate(zip(bodies, addresses, strict=True))
            messages = [_outgoing(n, body, *address) for n, (body, address) in pairs]
            messages.insert(3, _standard(99, "f@example.com"))
            verdicts = []
            if how == "pipeline":
                pipe = channel.pipeline()
                futures = [pipe.submit(message) for message in messages]
                pipe.finish()
                verdicts = [str(future.exception()) for future in futures]
            else:
                for message in messages:
                    try:
                        channel.send(message)
                        verdicts.append("None")
                    except PermanentDeliveryError as exc:
                        verdicts.append(str(exc))
            channel.close()
            received[how] = (
                sink.envelopes,
                sink.mail_options,
                verdicts,
                channel.connections_opened,
            )
    assert received["pipeline"] == received["send"]
    envelopes, options, verdicts, connections = received["pipeline"]
    assert verdicts == [
        "None",
        "None",
        "None",
        "None",
        "SMTP 550 5.1.1 no such user",
        "SMTP 553 5.7.1 sender refused",
        "None",
    ]
    recipients = [to for _sender, (to,), _data in envelopes]
    assert recipients == [f"{letter}@example.com" for letter in "abcfe"]
    assert all(option[0].startswith("SIZE=") for option in options)
    assert connections == 1


@SERVERS
def test_a_stop_lets_the_emails_built_ahead_go_and_releases_the_rest(store, offers):
    """Stop while the server holds the 2nd email: the 2nd and those already built (one,
    or two with PIPELINING) are sent and recorded as sent; no other email is sent; the
    rest is given back."""
    stop = threading.Event()
    with SmtpSink(
        on_message=lambda number, _m: number == 2 and stop.set(), pipelining=offers
    ) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 8)
        with build_channels(store.settings) as channels:
            report = dispatch_until_idle(
                store, now=T0, worker_id="w", channels=channels, batch_size=20, stop=stop
            )
    sent = report.outcomes["sent"] - 8  # the coupons, delivered before the emails
    assert 2 <= sent <= (4 if offers else 3)
    assert report.outcomes == {"sent": 8 + sent, "released": 8 - sent}
    recipients = [_recipient(m) for m in sink.messages]
    assert recipients == [f"u{i}" for i in range(sent)]
    emails = {r["user_id"]: r["state"] for r in outbox_rows(store) if r["kind"] == "email"}
    assert emails == {f"u{i}": "sent" if i < sent else "planned" for i in range(8)}


def test_a_pipeline_leaves_the_switch_interval_alone(store):
    """The pipeline runs on the dispatcher's thread: no worker needs the GIL back
    quickly (the interval is shortened only for pools of sending threads)."""
    before = sys.getswitchinterval()
    during = []
    with SmtpSink(on_message=lambda _n, _m: during.append(sys.getswitchinterval())) as sink:
        store = smtp_store(store, sink, PIPELINED)
        _plan_emails(store, 2)
        with build_channels(store.settings) as channels:
            dispatch_until_idle(store, now=T0, worker_id="w", channels=channels)
    assert during == [before, before]
    assert sys.getswitchinterval() == before


def test_one_connection_is_pipelined_unless_the_settings_say_otherwise(store):
    with SmtpSink() as sink:
        for settings, pipelined in (({}, True), ({"pipelined": False}, False)):
            configured = with_delivery(
                store,
                email={"backend": "smtp", "host": "127.0.0.1", "port": sink.port, **settings},
            )
            with build_channels(configured.settings) as channels:
                assert channels.get("email").pipelined is pipelined
