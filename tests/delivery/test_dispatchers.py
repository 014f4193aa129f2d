"""Several dispatchers in one process (`[delivery] dispatchers`, `run_dispatchers`).

They share the outbox as the dispatchers of several daemons do: every action is sent
once, to a real HTTP sink that counts duplicates, each claimed by a numbered worker.
"""

from __future__ import annotations

import threading

from delivery_helpers import T0, add_users, outbox_rows, plan, with_delivery
from sinks import HttpSink

from engine.delivery.runner import run_dispatchers, worker_name


def test_three_dispatchers_send_every_action_once(store):
    # The sink holds the first three requests until all three have arrived: one
    # dispatcher sends one request at a time, so three at once are three dispatchers.
    together = threading.Barrier(3, timeout=20)

    def first_three_together(number, _request):
        if number <= 3:
            together.wait()

    with HttpSink(on_request=first_three_together) as sink:
        store = with_delivery(
            store,
            dispatchers=3,
            batch_size=4,
            webhook={"backend": "http", "timeout": 30},
        )
        add_users(store, *({"id": f"u{n:02d}"} for n in range(40)))
        for n in range(40):
            plan(store, "webhook", f"u{n:02d}", {"url": sink.url + "/hook"})

        report = run_dispatchers(store, once=True, at=T0)

        assert not together.broken, "three dispatchers never sent at the same time"
        assert report.claimed == 40 and report.outcomes == {"sent": 40}
        assert len(sink.accepted) == 40 and sink.duplicates == 0
    rows = outbox_rows(store)
    assert {r["state"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}
    workers = {r["claimed_by"].split("#")[0] for r in rows}
    assert workers == {worker_name(n) for n in (1, 2, 3)}


def test_a_dispatcher_that_fails_stops_the_others_and_its_error_is_raised(store):
    """Polling dispatchers (once=False) would run until stopped: the failure of one
    stops the other, and run_dispatchers raises it."""
    store = with_delivery(store, dispatchers=2, webhook={"backend": "http", "timeout": 10})
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})

    def broken_rules():
        raise RuntimeError("the rule files cannot be read")

    raised = []

    def run():
        try:
            run_dispatchers(store, once=False, at=T0, poll_seconds=0.05, rules=broken_rules)
        except RuntimeError as exc:
            raised.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the other dispatcher kept polling"
    assert [str(e) for e in raised] == ["the rule files cannot be read"]
    # The failed batch was claimed, not sent: it waits for its lease to run out.
    assert [r["state"] for r in outbox_rows(store)] == ["claimed"]


def test_numbered_worker_names_fit_a_claim_holder():
    from engine.delivery.claims import new_holder

    assert worker_name(12).endswith("/12")
    assert len(new_holder(worker_name(12))) <= 64
