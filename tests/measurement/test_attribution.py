"""Attribution through the real path: rules evaluated, actions delivered, purchases
ingested, then purchases credited to decisions (engine/measurement/attribution.py).

Time is injected everywhere (evaluate at=, run_dispatcher at=, ingest now=).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from engine.delivery.runner import run_dispatcher
from engine.measurement.attribution import attribute, rule_windows
from engine.planning.assignment import bucket
from engine.planning.runner import evaluate
from engine.rules import load_rules
from engine.store.delivery import Coupon
from engine.store.planning import Decision
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, inside send windows
SENT = T + timedelta(hours=1)  # when the dispatcher delivers what was planned at T
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)

THANKS = """\
trigger: {event: signup}
attribution: {window: 3d}
actions:
  tag: {add: [thanked]}
"""


def signups(*users: str, at: datetime = T - timedelta(minutes=1)) -> list[dict]:
    return [{"user": user, "type": "signup", "at": at.isoformat()} for user in users]


def purchase(user: str, at: datetime, amount: float = 100, **fields) -> dict:
    return {"user": user, "type": "purchase", "at": at.isoformat(), "amount": amount, **fields}


def plan_and_deliver(store, settings, folder, *, at: datetime, sent: datetime, events, rules):
    """Ingest `events`, evaluate `rules` at `at`, deliver at `sent`."""
    ingest(store, folder, now=at, events=events)
    evaluate(store, ruleset_for(settings), at=at, rule_ids=rules)
    run_dispatcher(store, once=True, at=sent)


def credited(store, settings, *, since=T - DAY, until=T + 30 * DAY, rules=None):
    windows = rule_windows(load_rules(settings.rules_dir).rules.values())
    with store.read() as connection:
        return attribute(connection, since=since, until=until, windows=windows, rule_ids=rules)


def by_user(conversions) -> dict[str, list]:
    found: dict[str, list] = {}
    for conversion in conversions:
        found.setdefault(conversion.user_id, []).append(conversion)
    return found


def held_out_users(settings, rule_id: str, share: float, candidates, *, held: bool) -> list[str]:
    """Candidate user ids the deterministic holdout puts in (or out of) the control."""
    salt = settings.rules.assignment_salt
    limit = int(share * 10_000)
    return [u for u in candidates if (bucket(u, rule_id, salt, "holdout") < limit) == held]


def test_window_edges_from_delivery(store, settings, tmp_path):
    """exposure < purchase <= exposure + window, the exposure being the first send."""
    write_rule(settings, "thanks", THANKS)
    users = ("early", "at-send", "edge", "late", "never")
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups(*users), rules=["thanks"]
    )
    window = timedelta(days=3)
    ingest(
        store,
        tmp_path,
        now=SENT + 10 * DAY,
        events=[
            purchase("early", T + timedelta(minutes=30)),  # decided, not yet delivered
            purchase("at-send", SENT),  # the very instant of delivery: not after it
            purchase("edge", SENT + window),  # exactly at the window's end: counts
            purchase("late", SENT + window + SECOND),  # one second later: does not
        ],
    )

    found = by_user(credited(store, settings))

    assert set(found) == {"edge"}
    (conversion,) = found["edge"]
    assert (conversion.rule_id, conversion.outcome, conversion.via) == (
        "thanks",
        "planned",
        "window",
    )
    assert conversion.exposure_at == SENT
    assert conversion.decided_at == T
    assert conversion.revenue == Decimal("100.00")
    # Nothing after `until` counts: one second before the edge purchase, it is not there.
    assert credited(store, settings, until=SENT + window - SECOND) == []
    assert len(credited(store, settings, until=SENT + window)) == 1


def test_held_out_users_are_measured_from_the_decision(store, settings, tmp_path):
    """The control group's exposure is decided_at; the treated group's is delivery."""
    rule = "half"
    write_rule(
        settings,
        rule,
        "trigger: {event: signup}\nexperiment: {holdout: 50%}\nactions:\n  tag: {add: [x]}\n",
    )
    candidates = [f"u{n:03d}" for n in range(60)]
    held = held_out_users(settings, rule, 0.5, candidates, held=True)[:3]
    treated = held_out_users(settings, rule, 0.5, candidates, held=False)[:2]
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups(*held, *treated), rules=[rule]
    )
    with store.read() as connection:
        outcomes = dict(
            connection.execute(sa.select(Decision.__table__.c.user_id, Decision.outcome)).all()
        )
    assert {outcomes[u] for u in held} == {"held_out"}
    assert {outcomes[u] for u in treated} == {"planned"}
    h_soon, h_edge, h_late = held
    t_soon, t_after = treated
    ingest(
        store,
        tmp_path,
        now=T + 10 * DAY,
        events=[
            purchase(h_soon, T + timedelta(minutes=30)),  # control: after the decision
            purchase(h_edge, T + 7 * DAY),  # the default 7d window, from decided_at
            purchase(h_late, T + 7 * DAY + SECOND),
            purchase(t_soon, T + timedelta(minutes=30)),  # treated: before its delivery
            purchase(t_after, SENT + SECOND),
        ],
    )

    found = by_user(credited(store, settings))

    assert set(found) == {h_soon, h_edge, t_after}
    assert {found[u][0].outcome for u in (h_soon, h_edge)} == {"held_out"}
    assert {found[u][0].exposure_at for u in (h_soon, h_edge)} == {T}
    assert found[t_after][0].outcome == "planned"
    assert found[t_after][0].exposure_at == SENT


def test_a_redeemed_coupon_beats_the_window_and_the_last_touch(store, settings, tmp_path):
    write_rule(
        settings,
        "offer",
        "trigger: {event: signup}\nattribution: {window: 1d}\n"
        "actions:\n  coupon: {value: 10, expires_in: 30d}\n",
    )
    write_rule(settings, "nudge-visitors", "trigger: {event: visit}\nactions:\n  tag: {add: [v]}\n")
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups("u"), rules=["offer"]
    )
    later = T + 5 * DAY
    visit = [{"user": "u", "type": "visit", "at": (later - SECOND).isoformat()}]
    plan_and_deliver(
        store, settings, tmp_path, at=later, sent=later, events=visit, rules=["nudge-visitors"]
    )
    with store.read() as connection:
        code = connection.execute(sa.select(Coupon.__table__.c.code)).scalar_one()
    ingest(
        store,
        tmp_path,
        now=later + DAY,
        events=[
            # Five days after the coupon (its window is 1d), an hour after the other
            # rule's action: the code ties it to the coupon's decision all the same.
            purchase("u", later + timedelta(hours=1), 80, order_id="o1", coupon_code=code),
            # Without a code the last touch wins.
            purchase("u", later + timedelta(hours=2), 50, order_id="o2"),
        ],
    )

    found = {c.order_id: c for c in credited(store, settings)}

    assert (found["o1"].rule_id, found["o1"].via) == ("offer", "coupon")
    assert found["o1"].exposure_at == SENT
    assert (found["o2"].rule_id, found["o2"].via) == ("nudge-visitors", "window")
    # Asking for one rule never moves a purchase to it.
    assert [c.order_id for c in credited(store, settings, rules=["offer"])] == ["o1"]


def test_a_purchase_touched_by_two_rules_goes_to_the_last_touch(store, settings, tmp_path):
    write_rule(settings, "first", THANKS)
    write_rule(settings, "second", "trigger: {event: visit}\nactions:\n  tag: {add: [v]}\n")
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups("u"), rules=["first"]
    )
    later = T + 2 * DAY
    visit = [{"user": "u", "type": "visit", "at": (later - SECOND).isoformat()}]
    plan_and_deliver(
        store, settings, tmp_path, at=later, sent=later + SECOND, events=visit, rules=["second"]
    )
    ingest(
        store,
        tmp_path,
        now=T + 10 * DAY,
        events=[
            purchase("u", T + DAY, order_id="before-second"),  # only `first` touched it
            purchase("u", later + DAY, order_id="after-both"),  # both windows hold it
        ],
    )

    found = {c.order_id: c.rule_id for c in credited(store, settings)}

    assert found == {"before-second": "first", "after-both": "second"}


def test_within_one_rule_a_purchase_counts_once(store, settings, tmp_path):
    """Two decisions of one rule (two visits) both hold the purchase: it counts once,
    for the later one."""
    write_rule(settings, "visits", "trigger: {event: visit}\nactions:\n  tag: {add: [v]}\n")
    for hours in (0, 12):
        at = T + timedelta(hours=hours)
        visit = [{"user": "u", "type": "visit", "at": (at - SECOND).isoformat()}]
        plan_and_deliver(store, settings, tmp_path, at=at, sent=at, events=visit, rules=["visits"])
    with store.read() as connection:
        decided = connection.execute(
            sa.select(Decision.__table__.c.id).where(Decision.outcome == "planned")
        ).scalars()
        first, second = sorted(decided)
    ingest(store, tmp_path, now=T + 2 * DAY, events=[purchase("u", T + DAY)])

    (conversion,) = credited(store, settings)

    assert conversion.decision_id == second


def test_refunds_of_the_same_order_subtract(store, settings, tmp_path):
    write_rule(settings, "thanks", THANKS)
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups("u", "v"), rules=["thanks"]
    )

    def refund(user, at, amount, order):
        return {"user": user, "type": "refund", "at": at.isoformat(), "amount": amount,
                "order_id": order}  # fmt: skip

    ingest(
        store,
        tmp_path,
        now=SENT + 10 * DAY,
        events=[
            purchase("u", SENT + timedelta(hours=1), 100, order_id="o1"),
            refund("u", SENT + timedelta(hours=2), 30, "o1"),
            refund("u", SENT + timedelta(hours=3), 5, "other-order"),
            refund("u", SENT + 2 * DAY, 20, "o1"),  # after the report's `until` below
            purchase("v", SENT + timedelta(hours=1), 40, order_id="o2"),
            refund("v", SENT + timedelta(hours=2), 60, "o2"),  # more than was paid
        ],
    )

    found = {c.order_id: c for c in credited(store, settings, until=SENT + DAY)}

    assert (found["o1"].amount, found["o1"].refunded, found["o1"].revenue) == (
        Decimal("100.00"),
        Decimal("30.00"),
        Decimal("70.00"),
    )
    assert found["o2"].revenue == Decimal("0.00")  # never below zero; still a conversion
    later = {c.order_id: c.revenue for c in credited(store, settings, until=SENT + 5 * DAY)}
    assert later == {"o1": Decimal("50.00"), "o2": Decimal("0.00")}


def test_the_period_is_the_decisions_of_since_to_until(store, settings, tmp_path):
    write_rule(settings, "thanks", THANKS)
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups("u"), rules=["thanks"]
    )
    ingest(store, tmp_path, now=SENT + DAY, events=[purchase("u", SENT + timedelta(hours=1))])

    assert len(credited(store, settings, since=T)) == 1  # since is inclusive
    assert credited(store, settings, since=T + SECOND) == []  # decided before the period
    assert credited(store, settings, since=T - DAY, until=T) == []  # until is exclusive
