"""Several dispatchers in one process (`[delivery] dispatchers`, `run_dispatchers`).

They share the outbox as the dispatchers of several daemons do: every action is sent
once, to a real HTTP sink that counts duplicates, each claimed by a numbered worker.
"""

from __future__ import annotations

import pytest
from delivery_helpers import T0, add_users, outbox_rows, plan, with_delivery
from sinks import HttpSink

from engine.delivery.runner import run_dispatchers, worker_name


def test_three_dispatchers_send_every_action_once(store):
    with HttpSink() as sink:
        store = with_delivery(
            store,
            dispatchers=3,
            batch_size=4,
            webhook={"backend": "http", "timeout": 10},
        )
        add_users(store, *({"id": f"u{n:02d}"} for n in range(40)))
        for n in range(40):
            plan(store, "webhook", f"u{n:02d}", {"url": sink.url + "/hook"})

        report = run_dispatchers(store, once=True, at=T0)

        assert report.claimed == 40 and report.outcomes == {"sent": 40}
        assert len(sink.accepted) == 40 and sink.duplicates == 0
    rows = outbox_rows(store)
    assert {r["state"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}
    workers = {r["claimed_by"].split("#")[0] for r in rows}
    assert workers <= {worker_name(n) for n in (1, 2, 3)}


def test_a_dispatcher_that_fails_stops_the_others_and_its_error_is_raised(store):
    store = with_delivery(store, dispatchers=2, webhook={"backend": "http", "timeout": 10})
    add_users(store, {"id": "u1"})
    plan(store, "webhook", "u1", {"url": "https://example.com/h"})

    def broken_rules():
        raise RuntimeError("the rule files cannot be read")

    with pytest.raises(RuntimeError, match="cannot be read"):
        run_dispatchers(store, once=True, at=T0, rules=broken_rules)
    # Nothing was sent; what was claimed stays claimed until its lease runs out.
    assert [r["state"] for r in outbox_rows(store)] in (["planned"], ["claimed"])


def test_numbered_worker_names_fit_a_claim_holder():
    from engine.delivery.claims import new_holder

    assert worker_name(12).endswith("/12")
    assert len(new_holder(worker_name(12))) <= 64
