"""`nudge report` through the real path: users and signups ingested, a rule with a
holdout and two variants evaluated, its coupons and emails delivered, purchases (some
with the codes) ingested, then the report. Time is injected, nothing sleeps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.clock import ensure_aware
from engine.config import load_settings
from engine.delivery.runner import run_dispatcher
from engine.errors import ConfigError
from engine.measurement.report import build_report, render_report, send_costs
from engine.planning.runner import evaluate
from engine.store import Store
from engine.store.delivery import Coupon
from engine.store.planning import Decision, OutboxAction
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SENT = T + timedelta(hours=1)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
UNTIL = T + 10 * DAY
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
RULE = "welcome-offer"
WELCOME = """\
trigger: {event: signup}
experiment:
  holdout: 30%
  variants:
    amount: {weight: 1}
    percent: {weight: 1, coupon: {value: null, percent_off: 20}}
actions:
  coupon: {value: 10, expires_in: 30d}
  email: {creative: welcome}
"""
COSTS = "\n[delivery]\ncosts = {email = 0.5, sms = 0.05}\n"
runner = CliRunner()


def with_toml(store, extra: str) -> Store:
    """The same database with more nudge.toml, as a shop would edit it."""
    toml = store.settings.project_dir / "nudge.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + extra, encoding="utf-8")
    settings = load_settings(store.settings.project_dir, environ={})
    return Store(engine=store.engine, settings=settings)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def report_json(*args: str) -> dict:
    code, output = invoke("report", "--json", *args)
    assert code == 0, output
    return json.loads(output)


@pytest.fixture
def shop(store, tmp_path, monkeypatch):
    """200 shoppers sign up at T; the rule holds out ~30%, the rest get a coupon and an
    email at SENT (one unsubscribes in between). Then a known effect: 40% of the
    recipients buy for 100 within a day, 10% of the control group. The first three
    buyers of each variant use their code."""
    store = with_toml(store, f'[rules]\ntemplates = "{TEMPLATES}"\n')
    settings = store.settings
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, RULE, WELCOME)
    ids = [f"u{n:03d}" for n in range(200)]
    users = [{"id": u, "email": f"{u}@example.com", "email_opt_in": True, "locale": "en"}
             for u in ids]  # fmt: skip
    signups = [{"user": u, "type": "signup", "at": (T - HOUR).isoformat()} for u in ids]
    ingest(store, tmp_path, now=T, users=users, events=signups)
    evaluate(store, ruleset_for(settings), at=T)
    decided = decisions(store)
    held = sorted(u for u, (outcome, _) in decided.items() if outcome == "held_out")
    treated = sorted(u for u, (outcome, _) in decided.items() if outcome == "planned")
    unsubscribed = treated[-1]  # between planning and sending: the email is skipped
    soon = T + timedelta(minutes=5)
    ingest(store, tmp_path, now=soon, events=[{"user": unsubscribed, "type": "unsubscribe",
                                              "at": soon.isoformat()}])  # fmt: skip
    run_dispatcher(store, once=True, at=SENT)

    with store.read() as connection:
        codes = dict(
            connection.execute(sa.select(Coupon.__table__.c.user_id, Coupon.__table__.c.code)).all()
        )
    reached = [u for u in treated if u != unsubscribed]
    buyers = [u for i, u in enumerate(reached) if i % 10 < 4]
    control_buyers = [u for i, u in enumerate(held) if i % 10 < 1]
    with_code = {v: [u for u in buyers if decided[u][1] == v][:3] for v in ("amount", "percent")}
    bought = SENT + DAY
    purchases = []
    for n, user in enumerate(buyers + control_buyers):
        row = {"user": user, "type": "purchase", "at": bought.isoformat(), "amount": 100,
               "order_id": f"o{n}"}  # fmt: skip
        if user in with_code["amount"] + with_code["percent"]:
            row["coupon_code"] = codes[user]
        purchases.append(row)
    ingest(store, tmp_path, now=bought, events=purchases)
    return {
        "store": store,
        "held": held,
        "treated": treated,
        "reached": reached,
        "buyers": buyers,
        "control_buyers": control_buyers,
        "variant_of": {u: decided[u][1] for u in treated},
        "unsubscribed": unsubscribed,
    }


def decisions(store) -> dict[str, tuple[str, str | None]]:
    table = Decision.__table__
    with store.read() as connection:
        rows = connection.execute(sa.select(table.c.user_id, table.c.outcome, table.c.variant))
        return {user: (outcome, variant) for user, outcome, variant in rows}


def test_a_known_effect_is_measured_and_the_json_contract_holds(shop):
    store = with_toml(shop["store"], COSTS)
    held, treated, reached, buyers = shop["held"], shop["treated"], shop["reached"], shop["buyers"]

    data = report_json("--since", (T - DAY).isoformat(), "--until", UNTIL.isoformat())

    assert data["empty"] is False and data["currency"] == "CNY"
    (rule,) = data["rules"]
    assert rule["rule"] == RULE and rule["window"] == "1w"
    assert rule["audience"] == 200
    assert rule["held_out"] == len(held)
    assert rule["planned"] == len(treated) == len(reached) + 1
    assert rule["skipped"] == {"unsubscribed": 1}
    # The contract: names and fields every consumer may rely on.
    assert [v["name"] for v in rule["variants"]] == ["amount", "percent"]  # file order
    for group in [*rule["variants"], rule["control"]]:
        assert {"name", "recipients", "conversions", "revenue"} <= set(group)
    assert rule["control"]["name"] == "control"
    lift = rule["lift"]
    assert {"absolute", "ci_low", "ci_high", "p_value", "always_valid_low"} <= set(lift)
    assert {"always_valid_high", "verdict"} <= set(lift)

    # The numbers: everything was put there on purpose.
    control = rule["control"]
    assert control["recipients"] == len(held)
    assert control["conversions"] == len(shop["control_buyers"])
    assert Decimal(control["revenue"]) == 100 * len(shop["control_buyers"])
    by_name = {v["name"]: v for v in rule["variants"]}
    for name, variant in by_name.items():
        # Intention to treat: every planned user is a recipient, the unsubscribed one too.
        members = [u for u in treated if shop["variant_of"][u] == name]
        emailed = [u for u in reached if shop["variant_of"][u] == name]
        converted = [u for u in buyers if shop["variant_of"][u] == name]
        assert (variant["recipients"], variant["conversions"]) == (len(members), len(converted))
        assert Decimal(variant["revenue"]) == 100 * len(converted)
        assert variant["coupons_redeemed"] == 3
        assert variant["sends"] == {"email": len(emailed)}  # issuing a code is no send
        assert Decimal(variant["send_cost"]) == Decimal("0.5") * len(emailed)
    # Coupon cost: 3 x 10 off, and 3 x 20% of 100.
    assert Decimal(by_name["amount"]["coupon_cost"]) == Decimal("30.00")
    assert Decimal(by_name["percent"]["coupon_cost"]) == Decimal("60.00")

    rate_t = len(buyers) / len(treated)
    rate_c = len(shop["control_buyers"]) / len(held)
    assert lift["absolute"] == pytest.approx(rate_t - rate_c)
    assert lift["ci_low"] > 0 and lift["p_value"] < 0.01
    assert lift["always_valid_low"] < lift["ci_low"]  # the price of peeking at will
    assert "converts better" in lift["verdict"]
    assert rule["incremental_conversions"] == pytest.approx((rate_t - rate_c) * len(treated), 0.01)
    incremental = Decimal(rule["incremental_revenue"])
    expected = 100 * len(buyers) - 100 * len(shop["control_buyers"]) * len(treated) / len(held)
    assert float(incremental) == pytest.approx(expected, abs=0.01)
    cost = Decimal("90") + Decimal("0.5") * len(reached)
    assert Decimal(rule["coupon_cost"]) + Decimal(rule["send_cost"]) == cost
    assert rule["roi"] == pytest.approx(float((incremental - cost) / cost), abs=1e-4)
    assert [c["b"] for c in rule["comparisons"]] == ["percent"]
    assert rule["comparisons"][0]["a"] == "amount"

    # The same through the Python API, and a text table for people.
    report = build_report(store, since=T - DAY, until=UNTIL)
    text = render_report(report, store.settings.tz)
    lines = text.splitlines()
    assert lines[0] == (
        "Report for decisions from 2026-11-19 10:00:00+08:00 to 2026-11-30 10:00:00+08:00"
    )
    assert f"{RULE}  (window 1w)" in lines
    header = next(line for line in lines if line.strip().startswith("group"))
    assert header.split() == [
        "group", "recipients", "conversions", "rate", "revenue", "per", "recipient",
        "coupon", "cost", "sends", "send", "cost",
    ]  # fmt: skip
    assert any(line.strip().startswith("control ") for line in lines)
    assert any(line.strip().startswith(f"verdict: {lift['verdict']}") for line in lines)
    assert any("percent vs amount:" in line for line in lines)


def test_one_rule_and_purchases_up_to_until(shop):
    """--until cuts purchases too: before the buyers bought, nobody converted."""
    data = report_json("--rule", RULE, "--until", (SENT + DAY - timedelta(seconds=1)).isoformat())
    (rule,) = data["rules"]
    assert sum(v["recipients"] for v in rule["variants"]) == len(shop["treated"])
    assert sum(v["conversions"] for v in rule["variants"]) == 0
    assert rule["control"]["conversions"] == 0
    assert rule["lift"]["absolute"] == 0
    assert all(v["coupons_redeemed"] == 0 for v in rule["variants"])


def test_an_empty_period_says_so(store, settings, monkeypatch):
    monkeypatch.chdir(settings.project_dir)

    code, output = invoke("report", "--since", "2026-11-01", "--until", "2026-11-02")

    assert code == 0, output
    assert output == (
        "No decisions between 2026-11-01 00:00:00+08:00 and 2026-11-02 00:00:00+08:00: "
        "nothing to report.\n"
    )
    data = report_json("--since", "2026-11-01", "--until", "2026-11-02")
    assert (data["rules"], data["empty"]) == ([], True)
    assert data["message"].startswith("No decisions between")


def test_a_rule_without_holdout_reports_no_lift(store, settings, tmp_path, monkeypatch):
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, "tagger", "trigger: {event: signup}\nactions:\n  tag: {add: [x]}\n")
    signup = [{"user": "a", "type": "signup", "at": (T - HOUR).isoformat()}]
    ingest(store, tmp_path, now=T, events=signup)
    evaluate(store, ruleset_for(settings), at=T)
    run_dispatcher(store, once=True, at=SENT)

    data = report_json("--until", UNTIL.isoformat())

    (rule,) = data["rules"]
    assert [v["name"] for v in rule["variants"]] == ["treated"]
    assert rule["variants"][0]["sends"] == {"tag": 1}
    assert rule["control"]["recipients"] == 0
    assert rule["lift"]["absolute"] is None
    assert rule["lift"]["verdict"].startswith("not enough data yet")
    assert any("no held-out users" in note for note in rule["notes"])
    code, text = invoke("report", "--until", UNTIL.isoformat())
    assert code == 0 and "no held-out users" in text


def test_errors_are_located_and_plain(store, settings, monkeypatch):
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, "tagger", "trigger: {event: signup}\nactions:\n  tag: {add: [x]}\n")

    code, output = invoke("report", "--rule", "tager")
    assert (code, output) == (1, "Error: no rule 'tager' (did you mean 'tagger'?)\n")

    code, output = invoke("report", "--since", "yesterday")
    assert code == 1 and output.startswith("Error: --since: cannot read 'yesterday'")

    code, output = invoke("report", "--since", "2026-11-02", "--until", "2026-11-01")
    assert code == 1 and "--since" in output and "is not before" in output

    bad = with_toml(store, '\n[delivery]\ncosts = {emial = 0.001, sms = -1, email = "x"}\n')
    with pytest.raises(ConfigError) as caught:
        send_costs(bad.settings)
    toml = bad.settings.config_path
    assert str(caught.value).splitlines() == [
        f"{toml}: delivery.costs.emial: unknown channel (did you mean 'email'?)",
        f"{toml}: delivery.costs.sms: must be a number >= 0 (the cost of one send in the "
        "shop currency), got -1",
        f"{toml}: delivery.costs.email: must be a number >= 0 (the cost of one send in the "
        "shop currency), got 'x'",
    ]
    code, output = invoke("report")
    assert code == 1 and "delivery.costs.emial: unknown channel" in output


def test_delivery_is_reported_beside_the_recipients(shop):
    """Recipients are every planned user (intention to treat); `delivered` still says
    what reached them, from the outbox: the unsubscribed one saw nothing."""
    data = report_json("--since", (T - DAY).isoformat(), "--until", UNTIL.isoformat())
    (rule,) = data["rules"]
    assert rule["treated"]["recipients"] == len(shop["treated"])
    assert rule["delivered"] == len(shop["reached"])


def test_the_unit_is_the_user(store, settings, tmp_path, monkeypatch):
    """Two decisions of one rule for one user are one recipient, one conversion."""
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, "visits", "trigger: {event: visit}\nactions:\n  tag: {add: [v]}\n")
    for at in (T, T + 2 * DAY):
        visit = [{"user": "u", "type": "visit", "at": (at - HOUR).isoformat()}]
        ingest(store, tmp_path, now=at, events=visit)
        evaluate(store, ruleset_for(settings), at=at, rule_ids=["visits"])
        run_dispatcher(store, once=True, at=at)
    times = {"o1": T + DAY, "o2": T + 3 * DAY}  # one inside each decision's window
    buys = [{"user": "u", "type": "purchase", "at": at.isoformat(), "amount": 100,
             "order_id": order} for order, at in times.items()]  # fmt: skip
    ingest(store, tmp_path, now=T + 3 * DAY, events=buys)

    data = report_json("--since", (T - DAY).isoformat(), "--until", UNTIL.isoformat())

    (rule,) = data["rules"]
    assert rule["planned"] == 2  # decisions
    (treated,) = rule["variants"]
    assert (treated["recipients"], treated["conversions"]) == (1, 1)
    assert (treated["orders"], Decimal(treated["revenue"])) == (2, 200)


SEND_WINDOW_RULE = """\
trigger: {event: signup}
send_window: {between: ["09:00", "21:00"]}
experiment: {holdout: 50%}
actions:
  coupon: {value: 10, expires_in: 30d}
  email: {creative: welcome}
"""


def test_a_send_window_delay_is_no_loss(store, tmp_path, monkeypatch):
    """Regression: decided at 22:00 local, sent at 09:00 the next day; half of ALL users
    buy in between. Measured from the send, the treated lost exactly those buyers and the
    report said "treated converts worse"; from the decision, both groups convert alike."""
    store = with_toml(store, f'[rules]\ntemplates = "{TEMPLATES}"\n')
    settings = store.settings
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, "late-welcome", SEND_WINDOW_RULE)
    decided = T + 12 * HOUR  # 22:00 in Shanghai
    morning = T + 23 * HOUR  # 09:00 the next day: the window opens
    ids = [f"u{n:03d}" for n in range(200)]
    users = [{"id": u, "email": f"{u}@example.com", "email_opt_in": True, "locale": "en"}
             for u in ids]  # fmt: skip
    signups = [{"user": u, "type": "signup", "at": (decided - HOUR).isoformat()} for u in ids]
    ingest(store, tmp_path, now=decided, users=users, events=signups)
    evaluate(store, ruleset_for(settings), at=decided)
    run_dispatcher(store, once=True, at=decided)  # outside the window: deferred
    outcome = decisions(store)
    held = sorted(u for u, (o, _) in outcome.items() if o == "held_out")
    treated = sorted(u for u, (o, _) in outcome.items() if o == "planned")
    buyers = [u for group in (held, treated) for i, u in enumerate(group) if i % 2 == 0]
    gap = decided + 2 * HOUR
    ingest(store, tmp_path, now=gap, events=[
        {"user": u, "type": "purchase", "at": gap.isoformat(), "amount": 100} for u in buyers
    ])  # fmt: skip
    run_dispatcher(store, once=True, at=morning)
    with store.read() as connection:
        sent = connection.execute(
            sa.select(sa.func.min(OutboxAction.sent_at), sa.func.count()).where(
                OutboxAction.kind == "email", OutboxAction.state == "sent"
            )
        ).one()
    assert sent[1] == len(treated) and ensure_aware(sent[0]) > gap  # every email after the buys

    data = report_json("--since", (T - DAY).isoformat(), "--until", UNTIL.isoformat())

    (rule,) = data["rules"]
    control, (variant,) = rule["control"], rule["variants"]
    assert (control["recipients"], control["conversions"]) == (len(held), (len(held) + 1) // 2)
    assert (variant["recipients"], variant["conversions"]) == (
        len(treated),
        (len(treated) + 1) // 2,
    )
    verdict = rule["lift"]["verdict"]
    assert verdict.startswith("no significant difference"), verdict
