"""Long batches: leases renewed while a batch is in flight, fencing of a late finisher,
and a clean stop (issue 9, "The production daemon").

Time is an injected clock (delivery_helpers.Clock) that a channel moves forward to
play a slow endpoint; the HTTP sink is real and dedupes by webhook-id, so a duplicate
is counted, not hidden.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from delivery_helpers import T0, Clock, add_users, outbox_rows, plan, with_delivery
from sinks import HttpSink

from engine.delivery.channels import ChannelSet
from engine.delivery.channels.http import HttpChannel
from engine.delivery.claims import worker_of
from engine.delivery.context import TransientDeliveryError
from engine.delivery.dispatcher import dispatch_once, dispatch_until_idle
from engine.delivery.runner import run_dispatcher
from engine.store.delivery import DeliveryAttempt


def plan_webhooks(store, sink, n: int) -> list[int]:
    add_users(store, *({"id": f"u{i:03d}"} for i in range(n)))
    return [plan(store, "webhook", f"u{i:03d}", {"url": sink.url + "/hook"}) for i in range(n)]


def holder(row) -> str:
    """The worker of a row's claim (`claimed_by` is `<worker>#<claim id>`)."""
    return worker_of(row["claimed_by"])


class SlowEndpoint:
    """The real HTTP channel behind an endpoint that takes `per_send` of clock time per
    request; `during(n)` runs inside the n-th send (1-based), before it is made."""

    def __init__(self, clock: Clock, per_send=timedelta(0), during=None):
        self.http = HttpChannel(timeout=10)
        self.clock, self.per_send, self.during = clock, per_send, during
        self.calls = 0

    def send(self, message):
        self.calls += 1
        if self.during is not None:
            self.during(self.calls)
        self.http.send(message)
        self.clock.advance(self.per_send)

    def close(self):
        self.http.close()


@pytest.mark.parametrize("taker", ["b", "a"], ids=["another-worker", "same-worker-id"])
def test_a_late_finisher_neither_resends_nor_records_over_a_takeover(store, taker):
    """A's lease runs out while one request hangs; B takes the rest over and sends it.
    A must then send nothing B took and record nothing over B's results, even when B
    runs under the same worker id (another thread of the same process): each claim
    carries its own claim id."""
    store = with_delivery(store, lease="5m", sub_batch_size=4)
    clock = Clock()
    with HttpSink() as sink:
        ids = plan_webhooks(store, sink, 12)
        taken = {}

        def hang_then_take_over(call):
            if call == 5:  # first request of A's second sub-batch
                clock.advance(timedelta(minutes=6))  # ... hangs past A's lease
                taken["report"] = dispatch_until_idle(
                    store,
                    clock=clock,
                    worker_id=taker,
                    channels=ChannelSet({"webhook": HttpChannel(timeout=10)}),
                )
                raise TransientDeliveryError("POST /hook: timeout")  # and times out

        slow = SlowEndpoint(clock, during=hang_then_take_over)
        report = dispatch_once(
            store, clock=clock, worker_id="a", channels=ChannelSet({"webhook": slow})
        )

        rows = outbox_rows(store)
        keys = sorted(r["idempotency_key"] for r in rows)
        assert sorted(sink.accepted) == keys
        assert sink.duplicates == 0 and len(sink.requests) == 12  # each once, A's 5th hung
        assert [r["state"] for r in rows] == ["sent"] * 12
        assert [holder(r) for r in rows] == ["a"] * 4 + [taker] * 8
        assert len({r["claimed_by"] for r in rows}) == 2  # two claims, told apart
        assert [r["id"] for r in rows] == ids
        # A sent and recorded its first sub-batch; the 8 B took over are lost to A.
        assert report.claimed == 12
        assert report.outcomes == {"sent": 4, "lost": 8}
        assert taken["report"].claimed == 8 and taken["report"].outcomes == {"sent": 8}
        # A's timeout on row 5 was not recorded over B's `sent`, nor kept as history.
        with store.connect() as connection:
            history = connection.execute(sa.select(DeliveryAttempt.__table__)).all()
        assert history == []
        assert [r["attempts"] for r in rows] == [1] * 4 + [2] * 8


@pytest.mark.parametrize(
    "recheck",
    [
        "2s",  # slow sends cut every sub-batch after one send: renewed by the fences
        "1h",  # one sub-batch of 40 sends: renewed between two sends
    ],
)
def test_a_slow_batch_keeps_its_lease(store, recheck):
    """500 sends at 0.6 s outlive a 5-minute lease: the lease is renewed while the batch
    is in flight, so a second dispatcher finds nothing to take over."""
    store = with_delivery(store, lease="5m", sub_batch_size=40, recheck=recheck)
    clock = Clock()
    with HttpSink() as sink:
        plan_webhooks(store, sink, 40)
        other = {}

        def second_dispatcher(call):
            if call == 36:  # 35 sends x 10 s = 5 min 50 s after the claim
                other["report"] = dispatch_until_idle(
                    store,
                    clock=clock,
                    worker_id="b",
                    channels=ChannelSet({"webhook": HttpChannel(timeout=10)}),
                )

        slow = SlowEndpoint(clock, per_send=timedelta(seconds=10), during=second_dispatcher)
        report = dispatch_once(
            store, clock=clock, worker_id="a", channels=ChannelSet({"webhook": slow})
        )
        assert other["report"].claimed == 0
        assert report.outcomes == {"sent": 40}
        assert sink.duplicates == 0 and len(sink.requests) == 40
        rows = outbox_rows(store)
        assert {holder(r) for r in rows} == {"a"} and {r["state"] for r in rows} == {"sent"}
        # Each row is recorded sent at the end of its sub-batch, not at the claim.
        assert max(r["sent_at"] for r in rows) == T0 + timedelta(seconds=400)
        if recheck == "1h":
            assert {r["sent_at"] for r in rows} == {T0 + timedelta(seconds=400)}
        else:
            assert len({r["sent_at"] for r in rows}) == 40


def test_webhook_timestamp_is_the_time_of_each_send(store, monkeypatch):
    """Standard Webhooks receivers refuse a timestamp more than 5 minutes old: each
    request carries the instant it is sent, not the instant the batch was claimed."""
    from engine.delivery.channels.signing import verify

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    monkeypatch.setenv("NUDGE_WEBHOOK_SECRET", secret)
    clock = Clock()
    with HttpSink(clock=clock) as sink:
        plan_webhooks(store, sink, 8)
        slow = SlowEndpoint(clock, per_send=timedelta(minutes=2))
        report = dispatch_until_idle(
            store, clock=clock, worker_id="w", channels=ChannelSet({"webhook": slow})
        )
        assert report.outcomes == {"sent": 8}
        stamps = []
        for request in sink.requests:
            headers = {k.lower(): v for k, v in request["headers"].items()}
            assert verify(secret, headers, request["body"].decode())
            assert int(headers["webhook-timestamp"]) == int(request["received_at"].timestamp())
            stamps.append(int(headers["webhook-timestamp"]))
        assert stamps == [int((T0 + timedelta(minutes=2 * i)).timestamp()) for i in range(8)]
        assert len(sink.accepted) == 8


def test_stop_mid_batch_releases_what_was_not_sent(store):
    """run_dispatcher(stop=event) returns soon after event.set(), even mid-batch: what
    was sent is recorded, what was not is planned again (not claimed, attempts given
    back), and another dispatcher then sends it, once."""
    with HttpSink(hold_at=3) as sink:
        plan_webhooks(store, sink, 30)
        stop = threading.Event()
        result = {}
        thread = threading.Thread(
            target=lambda: result.update(
                report=run_dispatcher(store, once=False, at=T0, stop=stop, poll_seconds=60)
            )
        )
        thread.start()
        try:
            assert sink.reached.wait(timeout=30), "the dispatcher never reached request 3"
            stop.set()  # SIGTERM while request 3 is in flight
            sink.release.set()
            thread.join(timeout=10)
            assert not thread.is_alive(), "run_dispatcher did not return after stop"
        finally:
            stop.set()
            sink.release.set()
            thread.join(timeout=30)
        assert result["report"].outcomes == {"sent": 3, "released": 27}
        rows = outbox_rows(store)
        assert [r["state"] for r in rows] == ["sent"] * 3 + ["planned"] * 27
        assert {(r["claimed_by"], r["lease_until"], r["attempts"]) for r in rows[3:]} == {
            (None, None, 0)
        }
        assert len(sink.requests) == 3

        report = dispatch_until_idle(
            store, now=T0, worker_id="w2", channels=ChannelSet({"webhook": HttpChannel()})
        )
        assert report.outcomes == {"sent": 27}
        assert [r["state"] for r in outbox_rows(store)] == ["sent"] * 30
        assert sink.duplicates == 0 and len(sink.requests) == 30


def test_stop_before_a_pass_claims_nothing(store):
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    stop = threading.Event()
    stop.set()
    report = run_dispatcher(store, once=False, at=T0, stop=stop)
    assert report.claimed == 0
    assert [r["state"] for r in outbox_rows(store)] == ["planned"]


def test_stop_on_signals_sets_the_event_then_restores_the_handlers():
    from engine.delivery.runner import stop_on_signals

    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(timeout=5)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_renewal_that_fails_sends_nothing_more_and_keeps_what_was_sent(store, monkeypatch):
    """If the database cannot be reached to renew the lease mid-sub-batch, the dispatcher
    cannot know it still holds its rows: it sends nothing more, records what it sent and
    gives the rest back, rather than failing the whole sub-batch (which would re-send)."""
    from engine.delivery import claims

    store = with_delivery(store, lease="5m", recheck="1h")
    clock = Clock()
    real = claims.renew_claims
    failures = iter([True])

    def flaky(connection, ids, **kw):
        if next(failures, False):
            raise sa.exc.OperationalError("UPDATE outbox", {}, Exception("server closed"))
        return real(connection, ids, **kw)

    monkeypatch.setattr(claims, "renew_claims", flaky)
    with HttpSink() as sink:
        plan_webhooks(store, sink, 6)
        slow = SlowEndpoint(clock, per_send=timedelta(minutes=2))
        report = dispatch_once(
            store, clock=clock, worker_id="a", channels=ChannelSet({"webhook": slow})
        )
        # Send 1 at T0; before send 2 (T0+2m) the renewal is due and fails.
        assert report.outcomes == {"sent": 1, "released": 5}
        rows = outbox_rows(store)
        assert [(r["state"], r["attempts"]) for r in rows] == [("sent", 1)] + [("planned", 0)] * 5
        report = dispatch_until_idle(
            store, clock=clock, worker_id="b", channels=ChannelSet({"webhook": HttpChannel()})
        )
        assert report.outcomes == {"sent": 5}
        assert sink.duplicates == 0 and len(sink.requests) == 6


def test_a_takeover_under_a_skewed_clock_is_fenced_before_the_next_sub_batch(store):
    """B's clock runs 6 minutes ahead of A's: B takes A's batch over while A's clock says
    the lease is young, so A's own renewals never fall due. The confirmation before
    A's next sub-batch still finds the rows gone: A sends none of them again."""
    store = with_delivery(store, lease="5m", sub_batch_size=4)
    a_clock, b_clock = Clock(), Clock(T0 + timedelta(minutes=6))
    with HttpSink() as sink:
        plan_webhooks(store, sink, 12)
        taken = {}

        def take_over(call):
            if call == 4:  # last request of A's first sub-batch
                taken["report"] = dispatch_until_idle(
                    store,
                    clock=b_clock,
                    worker_id="b",
                    channels=ChannelSet({"webhook": HttpChannel(timeout=10)}),
                )
                raise TransientDeliveryError("POST /hook: timeout")

        slow = SlowEndpoint(a_clock, during=take_over)
        report = dispatch_once(
            store, clock=a_clock, worker_id="a", channels=ChannelSet({"webhook": slow})
        )
        # B re-sent A's 3 unrecorded requests (same webhook-id: the sink drops them) and
        # sent the rest; A sent nothing after B took over, and recorded nothing over it.
        assert taken["report"].outcomes == {"sent": 12}
        assert report.outcomes == {"lost": 12}
        assert sink.duplicates == 3 and len(sink.requests) == 15
        rows = outbox_rows(store)
        assert [(r["state"], holder(r)) for r in rows] == [("sent", "b")] * 12
