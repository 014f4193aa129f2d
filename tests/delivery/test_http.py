"""Webhooks and SMS through a real HTTP server on 127.0.0.1; crash and concurrency proofs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from delivery_helpers import T0, add_users, outbox_rows, plan, plan_with_offer, with_delivery
from sinks import HttpSink

from engine.delivery.backoff import retry_delay
from engine.delivery.channels import ChannelSet
from engine.delivery.channels.http import HttpChannel
from engine.delivery.channels.signing import verify
from engine.delivery.dispatcher import dispatch_until_idle

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def http_channels(**extra):
    return ChannelSet({"webhook": HttpChannel(timeout=10), "sms": HttpChannel(timeout=10), **extra})


def test_signed_post_with_standard_webhooks_headers(store, monkeypatch):
    monkeypatch.setenv("NUDGE_WEBHOOK_SECRET", SECRET)
    with HttpSink() as sink:
        add_users(store, {"id": "u1"})
        plan(store, "webhook", "u1", {"url": sink.url + "/hook", "body": {"segment": "vip"}})
        report = dispatch_until_idle(store, now=T0, worker_id="w", channels=http_channels())
        assert report.outcomes == {"sent": 1}
        [request] = sink.requests
        key = outbox_rows(store)[0]["idempotency_key"]
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["webhook-id"] == key
        assert headers["webhook-timestamp"] == str(int(T0.timestamp()))
        assert headers["content-type"] == "application/json"
        assert verify(SECRET, headers, request["body"].decode())
        assert not verify("whsec_" + "A" * 32, headers, request["body"].decode())
        assert json.loads(request["body"]) == {
            "type": "nudge.webhook",
            "timestamp": T0.isoformat(),
            "data": {
                "idempotency_key": key,
                "rule_id": "winback",
                "user_id": "u1",
                "variant": None,
                "segment": "vip",
            },
        }


def test_failures_retry_with_backoff_then_succeed(store):
    store = with_delivery(store, retry={"max_attempts": 5, "base": "30s", "max_delay": "1h"})
    with HttpSink(fail_first=2) as sink:
        add_users(store, {"id": "u1"})
        plan(store, "webhook", "u1", {"url": sink.url + "/hook"})
        key = outbox_rows(store)[0]["idempotency_key"]
        now, schedule = T0, []
        for attempt in (1, 2):
            report = dispatch_until_idle(store, now=now, worker_id="w", channels=http_channels())
            assert report.outcomes == {"retry": 1}
            row = outbox_rows(store)[0]
            step = timedelta(seconds=30) * 2 ** (attempt - 1)
            expected = retry_delay(key, attempt, base=timedelta(seconds=30), max_delay=step * 99)
            assert step / 2 <= expected <= step
            assert row["next_attempt_at"] == now + expected
            assert row["last_error"] == f"POST {sink.url}/hook: HTTP 503: busy"
            schedule.append(row["next_attempt_at"])
            now = row["next_attempt_at"]
        report = dispatch_until_idle(store, now=now, worker_id="w", channels=http_channels())
        assert report.outcomes == {"sent": 1}
        assert len(sink.requests) == 3 and len(sink.accepted) == 1
        assert (outbox_rows(store)[0]["state"], outbox_rows(store)[0]["attempts"]) == ("sent", 3)


def test_4xx_is_dead_with_the_response(store):
    with HttpSink() as sink:
        add_users(store, {"id": "u1"})
        plan(store, "webhook", "u1", {"url": sink.url + "/reject"})
        report = dispatch_until_idle(store, now=T0, worker_id="w", channels=http_channels())
        assert report.reasons == {"rejected": 1}
        row = outbox_rows(store)[0]
        assert row["state"] == "dead"
        assert row["last_error"] == (
            f'POST {sink.url}/reject: HTTP 400: {{"error": "unknown recipient"}}'
        )


def test_sms_posts_text_to_the_gateway(store):
    with HttpSink() as sink:
        store = with_delivery(store, sms={"backend": "http", "url": sink.url + "/sms"})
        add_users(store, {"id": "u1", "phone": "138 0013 8000", "locale": "en"})
        plan_with_offer(store, "sms", "u1", {"creative": "winback"})
        report = dispatch_until_idle(store, now=T0, worker_id="w", channels=http_channels())
        assert report.outcomes == {"sent": 2}  # the coupon and the SMS
        [body] = sink.accepted.values()
        assert body["type"] == "nudge.sms"
        assert body["data"]["to"] == "+8613800138000"
        assert "Test Shop" in body["data"]["text"]


def test_kill_9_mid_batch_then_restart_loses_nothing(store, project_dir):
    with HttpSink(hold_at=8) as sink:
        add_users(store, *({"id": f"u{i:02d}"} for i in range(20)))
        for i in range(20):
            plan(store, "webhook", f"u{i:02d}", {"url": sink.url + "/hook"})
        child = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("dispatch_child.py")),
                str(project_dir),
                T0.isoformat(),
            ],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        try:
            assert sink.reached.wait(timeout=60), "the child never reached request 8"
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
        sink.release.set()
        states = [r["state"] for r in outbox_rows(store)]
        # Batch 1 (5) was recorded; batch 2 (5) is claimed by the dead child; 10 planned.
        assert states.count("sent") == 5 and states.count("claimed") == 5
        # Before the lease ends nobody touches the dead child's rows ...
        report = dispatch_until_idle(store, now=T0, worker_id="w2", channels=http_channels())
        assert report.claimed == 10
        assert sorted(r["state"] for r in outbox_rows(store)).count("claimed") == 5
        # ... after it, they are taken over.
        later = T0 + timedelta(minutes=6)
        report = dispatch_until_idle(store, now=later, worker_id="w2", channels=http_channels())
        assert report.claimed == 5 and report.outcomes == {"sent": 5}
    rows = outbox_rows(store)
    assert [r["state"] for r in rows] == ["sent"] * 20
    # Exactly one effect per action at the idempotent sink. The child had posted three
    # requests of its unrecorded batch (6, 7 and the in-flight 8), which the takeover
    # re-sent with the same webhook-id: the sink recognised each one.
    assert sorted(sink.accepted) == sorted(r["idempotency_key"] for r in rows)
    assert sink.duplicates == 3
    assert len(sink.requests) == 23


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_dispatchers_on_postgresql_claim_disjoint_batches(store):
    """SQLite has a single writer; concurrent claims are a PostgreSQL matter."""
    add_users(store, *({"id": f"u{i:03d}"} for i in range(200)))
    for i in range(200):
        plan(store, "webhook", f"u{i:03d}", {"url": "http://127.0.0.1/hook"})
    both_holding_claims = threading.Barrier(2, timeout=30)
    delivered: list[tuple[str, str]] = []
    lock = threading.Lock()

    class RecordingChannel:
        def __init__(self, worker):
            self.worker, self.first = worker, True

        def send(self, message):
            if self.first:  # both workers hold a claimed batch at the same moment
                self.first = False
                both_holding_claims.wait()
            with lock:
                delivered.append((self.worker, message.key))

        def close(self):
            pass

    reports = {}

    def work(worker):
        channels = ChannelSet({"webhook": RecordingChannel(worker)})
        reports[worker] = dispatch_until_idle(
            store, now=T0, worker_id=worker, channels=channels, batch_size=20
        )

    threads = [threading.Thread(target=work, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    keys = [key for _, key in delivered]
    assert len(keys) == 200 and len(set(keys)) == 200
    assert {w for w, _ in delivered} == {"a", "b"}
    assert reports["a"].claimed + reports["b"].claimed == 200
    # Who delivered each action is who holds its claim: the two sets are disjoint.
    by_worker = {key: worker for worker, key in delivered}
    holders = {r["idempotency_key"]: r["claimed_by"] for r in outbox_rows(store)}
    assert {key: holder.split("#")[0] for key, holder in holders.items()} == by_worker
    assert [r["state"] for r in outbox_rows(store)] == ["sent"] * 200
