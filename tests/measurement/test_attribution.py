"""Attribution through the real path: rules evaluated, actions delivered, purchases
ingested, then purchases credited to decisions (engine/measurement/attribution.py).

Semantics: intention to treat (treated and held-out decisions are exposed at
`decided_at`), each rule measured on its own, a redeemed coupon picks the decision
within its rule but never stretches the window.

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
from engine.store.delivery import Coupon, CouponRedemption
from engine.store.planning import Decision, OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, inside send windows
SENT = T + timedelta(hours=1)  # when the dispatcher delivers what was planned at T
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
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


def test_window_edges_from_the_decision(store, settings, tmp_path):
    """decided_at < purchase <= decided_at + window, whenever the message went out."""
    write_rule(settings, "thanks", THANKS)
    users = ("at-decision", "early", "edge", "late", "never")
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups(*users), rules=["thanks"]
    )
    window = timedelta(days=3)
    ingest(
        store,
        tmp_path,
        now=SENT + 10 * DAY,
        events=[
            purchase("at-decision", T),  # the very instant of the decision: not after it
            purchase("early", T + timedelta(minutes=30)),  # decided, not yet delivered: counts
            purchase("edge", T + window),  # exactly at the window's end: counts
            purchase("late", T + window + SECOND),  # one second later: does not
        ],
    )

    found = by_user(credited(store, settings))

    assert set(found) == {"early", "edge"}
    (conversion,) = found["edge"]
    assert (conversion.rule_id, conversion.outcome, conversion.via) == (
        "thanks",
        "planned",
        "window",
    )
    assert conversion.exposure_at == T
    assert conversion.decided_at == T
    assert conversion.revenue == Decimal("100.00")
    assert found["early"][0].exposure_at == T
    # Nothing after `until` counts: one second before the edge purchase, it is not there.
    assert [c.user_id for c in credited(store, settings, until=T + window - SECOND)] == ["early"]
    assert len(credited(store, settings, until=T + window)) == 2


def test_held_out_and_treated_are_measured_the_same_way(store, settings, tmp_path):
    """Both groups are exposed at decided_at, with the same window edges."""
    rule = "half"
    write_rule(
        settings,
        rule,
        "trigger: {event: signup}\nexperiment: {holdout: 50%}\nactions:\n  tag: {add: [x]}\n",
    )
    candidates = [f"u{n:03d}" for n in range(60)]
    held = held_out_users(settings, rule, 0.5, candidates, held=True)[:3]
    treated = held_out_users(settings, rule, 0.5, candidates, held=False)[:3]
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
    t_soon, t_edge, t_late = treated
    events = []
    for soon, edge, late in ((h_soon, h_edge, h_late), (t_soon, t_edge, t_late)):
        events += [
            purchase(soon, T + timedelta(minutes=30)),  # after the decision, before SENT
            purchase(edge, T + 7 * DAY),  # the default 7d window, from decided_at
            purchase(late, T + 7 * DAY + SECOND),
        ]
    ingest(store, tmp_path, now=T + 10 * DAY, events=events)

    found = by_user(credited(store, settings))

    assert set(found) == {h_soon, h_edge, t_soon, t_edge}
    assert {found[u][0].outcome for u in (h_soon, h_edge)} == {"held_out"}
    assert {found[u][0].outcome for u in (t_soon, t_edge)} == {"planned"}
    assert {found[u][0].exposure_at for u in found} == {T}


OFFER = """\
trigger: {event: visit}
attribution: {window: 3d}
actions:
  coupon: {value: 10, expires_in: 30d}
"""


def visit_at(at: datetime) -> list[dict]:
    return [{"user": "u", "type": "visit", "at": (at - SECOND).isoformat()}]


def coupon_codes(store) -> dict[int, str]:
    """decision id -> the code its coupon action issued."""
    table = Coupon.__table__
    outbox = OutboxAction.__table__
    with store.read() as connection:
        rows = connection.execute(
            sa.select(outbox.c.decision_id, table.c.code).join(
                outbox, outbox.c.idempotency_key == table.c.idempotency_key
            )
        ).all()
    return dict(rows)


def test_a_coupon_picks_its_decision_inside_the_window_only(store, settings, tmp_path):
    """Two decisions of one rule hold the purchase: the redeemed code picks the earlier
    one (the latest would win otherwise). A code used after the window counts for
    nothing: the coupon never stretches the window."""
    write_rule(settings, "offer", OFFER)
    for at in (T, T + 12 * HOUR):
        plan_and_deliver(
            store, settings, tmp_path, at=at, sent=at, events=visit_at(at), rules=["offer"]
        )
    codes = coupon_codes(store)
    first, second = sorted(codes)
    ingest(
        store,
        tmp_path,
        now=T + 10 * DAY,
        events=[
            # Inside both windows; the code is the first decision's.
            purchase("u", T + DAY, 80, order_id="o1", coupon_code=codes[first]),
            # Inside both windows, no code: the latest decision of the rule.
            purchase("u", T + DAY + HOUR, 50, order_id="o2"),
            # 3d12h after the second decision (window 3d): outside every window.
            purchase("u", T + 4 * DAY, 30, order_id="o3", coupon_code=codes[second]),
        ],
    )

    found = {c.order_id: c for c in credited(store, settings)}

    assert set(found) == {"o1", "o2"}
    assert (found["o1"].decision_id, found["o1"].via) == (first, "coupon")
    assert found["o1"].exposure_at == T
    assert (found["o2"].decision_id, found["o2"].via) == (second, "window")


def test_a_purchase_touched_by_two_rules_counts_for_both(store, settings, tmp_path):
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
            # T + 3d: the last instant of first's 3d window, a day into second's 7d one.
            purchase("u", later + DAY, order_id="after-both"),
        ],
    )

    found = sorted((c.order_id, c.rule_id) for c in credited(store, settings))

    assert found == [("after-both", "first"), ("after-both", "second"), ("before-second", "first")]
    # Asking for one rule gives that rule's own measure.
    only_first = sorted(c.order_id for c in credited(store, settings, rules=["first"]))
    assert only_first == ["after-both", "before-second"]
    assert [c.order_id for c in credited(store, settings, rules=["second"])] == ["after-both"]


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


# ---------------------------------------------------------------- regressions (review)


def test_a_follow_up_does_not_take_conversions_from_the_rule_it_follows(store, settings, tmp_path):
    """Only treated users get the follow-up (held-out ones received nothing to follow).
    Under last touch it took their purchases, so `first` lost them in its treated group
    only and looked worse than its control. Each rule is now measured on its own."""
    rule = "first"
    write_rule(
        settings,
        rule,
        "trigger: {event: signup}\nexperiment: {holdout: 50%}\nactions:\n  tag: {add: [x]}\n",
    )
    write_rule(
        settings, "follow", "trigger: {after: first, wait: 1h}\nactions:\n  tag: {add: [y]}\n"
    )
    candidates = [f"u{n:03d}" for n in range(60)]
    held = held_out_users(settings, rule, 0.5, candidates, held=True)[:3]
    treated = held_out_users(settings, rule, 0.5, candidates, held=False)[:3]
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=T, events=signups(*held, *treated), rules=[rule]
    )
    due = T + 2 * HOUR
    evaluate(store, ruleset_for(settings), at=due, rule_ids=["follow"])
    run_dispatcher(store, once=True, at=due)
    with store.read() as connection:
        table = Decision.__table__
        followed = connection.execute(
            sa.select(table.c.user_id).where(
                table.c.rule_id == "follow", table.c.outcome == "planned"
            )
        ).scalars()
        assert sorted(followed) == sorted(treated)
    # Everybody buys after the follow-up, inside both rules' windows.
    everyone = [*held, *treated]
    ingest(store, tmp_path, now=T + DAY, events=[purchase(u, T + DAY) for u in everyone])

    found = credited(store, settings)

    first = {c.user_id: c.outcome for c in found if c.rule_id == "first"}
    assert first == {**dict.fromkeys(held, "held_out"), **dict.fromkeys(treated, "planned")}
    assert sorted(c.user_id for c in found if c.rule_id == "follow") == sorted(treated)
    assert len(found) == 9  # 6 for `first`, 3 for `follow`: each purchase once per rule


def test_a_coupon_redeemed_after_the_window_is_not_credited(store, settings, tmp_path):
    """It used to be credited whatever its time, observing the treated group (who hold
    coupons) for longer than the control group (who do not)."""
    write_rule(
        settings,
        "offer",
        "trigger: {event: signup}\nattribution: {window: 1d}\n"
        "actions:\n  coupon: {value: 10, expires_in: 30d}\n",
    )
    plan_and_deliver(
        store, settings, tmp_path, at=T, sent=SENT, events=signups("u", "v"), rules=["offer"]
    )
    with store.read() as connection:
        table = Coupon.__table__
        codes = dict(connection.execute(sa.select(table.c.user_id, table.c.code)).all())
    ingest(
        store,
        tmp_path,
        now=T + 10 * DAY,
        events=[
            purchase("u", T + 5 * DAY, 80, order_id="late", coupon_code=codes["u"]),
            purchase("v", T + 12 * HOUR, 80, order_id="inside", coupon_code=codes["v"]),
        ],
    )
    redemption = CouponRedemption.__table__
    with store.read() as connection:
        redeemed = connection.execute(
            sa.select(sa.func.count()).where(redemption.c.outcome == "redeemed")
        ).scalar_one()
    assert redeemed == 2  # both codes were redeemed; u's four days after its window

    found = credited(store, settings)

    assert [(c.order_id, c.user_id, c.via) for c in found] == [("inside", "v", "coupon")]
