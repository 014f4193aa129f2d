"""The dispatcher: claims, outcomes, retries with exact times, dead letters, leases."""

from __future__ import annotations

from datetime import timedelta

from delivery_helpers import T0, add_users, outbox_rows, plan, with_delivery

from engine.delivery.backoff import retry_delay
from engine.delivery.channels import ChannelSet, NoopChannel
from engine.delivery.context import TransientDeliveryError
from engine.delivery.dispatcher import dispatch_once, dispatch_until_idle


class FlakyChannel:
    """Fails the first `failures` sends with a transient error (a stand-in sink only for
    the dispatcher's bookkeeping; real HTTP/SMTP servers are used in the channel tests)."""

    def __init__(self, failures: int):
        self.failures = failures
        self.sent = []

    def send(self, message):
        if self.failures:
            self.failures -= 1
            raise TransientDeliveryError("HTTP 503: try later")
        self.sent.append(message)

    def close(self):
        pass


def test_sends_and_records(store):
    add_users(store, {"id": "u1"}, {"id": "u2"})
    first = plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    plan(store, "webhook", "u2", {"url": "https://example.com/h"}, at=T0 + timedelta(hours=1))
    sink = NoopChannel()
    report = dispatch_once(store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": sink}))
    assert report.as_dict() == {"claimed": 1, "outcomes": {"sent": 1}, "reasons": {}}
    rows = outbox_rows(store)
    assert [(r["id"], r["state"], r["attempts"], r["sent_at"]) for r in rows] == [
        (first, "sent", 1, T0),
        (rows[1]["id"], "planned", 0, None),
    ]
    assert sink.sent[0].body["data"]["user_id"] == "u1"
    assert sink.sent[0].key == rows[0]["idempotency_key"]


def test_retry_schedule_then_dead_letter(store):
    store = with_delivery(store, retry={"max_attempts": 3, "base": "1m", "max_delay": "1h"})
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    channels = ChannelSet({"webhook": FlakyChannel(failures=10)})
    key = outbox_rows(store)[0]["idempotency_key"]
    now = T0
    for attempt in (1, 2):
        report = dispatch_once(store, now=now, worker_id="w1", channels=channels)
        assert report.outcomes == {"retry": 1}
        row = outbox_rows(store)[0]
        delay = retry_delay(key, attempt, base=timedelta(minutes=1), max_delay=timedelta(hours=1))
        assert timedelta(minutes=1) * 2 ** (attempt - 1) / 2 <= delay
        assert (row["state"], row["attempts"], row["next_attempt_at"]) == (
            "planned",
            attempt,
            now + delay,
        )
        assert row["last_error"] == "HTTP 503: try later"
        # Not due a second earlier.
        early = dispatch_once(
            store, now=now + delay - timedelta(seconds=1), worker_id="w1", channels=channels
        )
        assert early.claimed == 0
        now = now + delay
    report = dispatch_once(store, now=now, worker_id="w1", channels=channels)
    assert report.as_dict()["reasons"] == {"max_attempts": 1}
    row = outbox_rows(store)[0]
    assert (row["state"], row["reason"], row["last_error"]) == (
        "dead",
        "max_attempts",
        "HTTP 503: try later",
    )


def test_retry_then_success(store):
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    flaky = FlakyChannel(failures=1)
    channels = ChannelSet({"webhook": flaky})
    dispatch_once(store, now=T0, worker_id="w1", channels=channels)
    due = outbox_rows(store)[0]["next_attempt_at"]
    assert dispatch_once(store, now=due, worker_id="w1", channels=channels).outcomes == {"sent": 1}
    assert len(flaky.sent) == 1
    assert outbox_rows(store)[0]["state"] == "sent"


def test_expired_lease_is_taken_over(store):
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})
    from engine.delivery.claims import claim_batch

    with store.begin() as connection:  # a dispatcher that claims and then dies
        claim_batch(
            connection, now=T0, worker_id="dead", lease_until=T0 + timedelta(minutes=5), limit=10
        )
    sink = NoopChannel()
    channels = ChannelSet({"webhook": sink})
    assert (
        dispatch_once(
            store, now=T0 + timedelta(minutes=4), worker_id="w2", channels=channels
        ).claimed
        == 0
    )
    report = dispatch_once(store, now=T0 + timedelta(minutes=6), worker_id="w2", channels=channels)
    assert report.outcomes == {"sent": 1}
    row = outbox_rows(store)[0]
    # claimed_by is the worker and the claim's own id.
    assert (row["state"], row["claimed_by"].split("#")[0], row["attempts"]) == ("sent", "w2", 2)


def test_unknown_kind_and_invalid_params_go_dead(store):
    add_users(store, {"id": "u1"})
    plan(store, "carrier_pigeon", "u1", {})
    plan(store, "webhook", "u1", {"url": "not a url"})
    report = dispatch_until_idle(
        store, now=T0, worker_id="w1", channels=ChannelSet({"webhook": NoopChannel()})
    )
    assert report.reasons == {"unknown_kind": 1, "invalid_params": 1}
    rows = outbox_rows(store)
    assert rows[0]["last_error"] == "no deliverable action kind 'carrier_pigeon' is registered"
    assert "neither an http(s) URL nor an endpoint name" in rows[1]["last_error"]


def test_priority_order_and_batches(store):
    add_users(store, *({"id": f"u{i}"} for i in range(7)))
    for i in range(7):
        plan(store, "webhook", f"u{i}", {"url": "https://example.com/h"}, priority=i % 3)
    sink = NoopChannel()
    report = dispatch_until_idle(
        store, now=T0, worker_id="w1", batch_size=3, channels=ChannelSet({"webhook": sink})
    )
    assert report.claimed == 7 and report.outcomes == {"sent": 7}
    priorities = [int(m.body["data"]["user_id"][1:]) % 3 for m in sink.sent]
    assert priorities == sorted(priorities, reverse=True)


def test_config_errors_name_the_key():
    import pytest

    from engine.delivery.config import parse_delivery_config
    from engine.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_delivery_config(
            {"caps": {"email": {"max": 2, "per": "7 days"}}, "retyr": {}}, "shop/nudge.toml"
        )
    assert str(error.value).splitlines() == [
        "shop/nudge.toml: delivery.caps.email.per: invalid duration '7 days': use a number "
        "and a unit w, d, h, m or s (for example '14d', '12h', '30m', '2w' or '1d12h')",
        "shop/nudge.toml: delivery.retyr: unknown key (did you mean 'retry'?)",
    ]
