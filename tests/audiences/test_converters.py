"""`nudge audiences export-converters` through the real path: users and signups
ingested, a rule with a holdout evaluated, its coupons and emails delivered, purchases
(some with the codes) ingested, then the export of who the rule converted. Time is
injected, nothing sleeps.
"""

from __future__ import annotations

import csv
import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.audiences.normalise import sha256_hex
from engine.config import load_settings
from engine.delivery.runner import run_dispatcher
from engine.errors import NotFoundError, NudgeError
from engine.measurement.converters import export_converters
from engine.measurement.report import build_report, render_report
from engine.planning.runner import evaluate
from engine.store import Store
from engine.store.delivery import Coupon
from engine.store.people import User
from engine.store.planning import Decision
from tests.planning.helpers import ingest, ruleset_for, write_rule

T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SENT = T + timedelta(hours=1)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SINCE, UNTIL = T - DAY, T + 10 * DAY
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
RULE = "welcome-offer"
WELCOME = """\
trigger: {event: signup}
experiment: {holdout: 30%}
actions:
  coupon: {value: 10, expires_in: 30d}
  email: {creative: welcome}
"""
OTHER = "tagger"  # no holdout, no coupon: its own exposures compete for purchases
TAGGER = "trigger: {event: signup}\nactions:\n  tag: {add: [x]}\n"
runner = CliRunner()


def with_templates(store) -> Store:
    toml = store.settings.project_dir / "nudge.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(text + f'[rules]\ntemplates = "{TEMPLATES}"\n', encoding="utf-8")
    return Store(engine=store.engine, settings=load_settings(toml.parent, environ={}))


@pytest.fixture
def shop(store, tmp_path, monkeypatch):
    """200 shoppers sign up at T; ~30% are held out of welcome-offer, the rest get a
    coupon and an email at SENT. 40% of the recipients buy within a day (the first
    five with their code), 10% of the control group too; one more recipient buys three
    days later (`late`), another eight days later, out of the 7-day window (`stray`).
    Among the buyers, one never gave ads consent and one unsubscribes after buying."""
    store = with_templates(store)
    settings = store.settings
    monkeypatch.chdir(settings.project_dir)
    write_rule(settings, RULE, WELCOME)
    ids = [f"u{n:03d}" for n in range(200)]
    users = [
        {
            "id": u,
            "email": f" {u.upper()}@Example.com",  # normalised before hashing
            "email_opt_in": True,
            "ads_opt_in": True,
            "phone": "+86 138 0013 8000" if n % 2 else None,
            "country": "CN",
            "locale": "en",
        }
        for n, u in enumerate(ids)
    ]
    signups = [{"user": u, "type": "signup", "at": (T - HOUR).isoformat()} for u in ids]
    ingest(store, tmp_path, now=T, users=users, events=signups)
    evaluate(store, ruleset_for(settings), at=T)
    run_dispatcher(store, once=True, at=SENT)

    table = Decision.__table__
    with store.read() as connection:
        outcomes = dict(connection.execute(sa.select(table.c.user_id, table.c.outcome)).all())
        codes = dict(
            connection.execute(sa.select(Coupon.__table__.c.user_id, Coupon.__table__.c.code)).all()
        )
    treated = sorted(u for u, outcome in outcomes.items() if outcome == "planned")
    held = sorted(u for u, outcome in outcomes.items() if outcome == "held_out")
    buyers = [u for i, u in enumerate(treated) if i % 10 < 4]
    control_buyers = [u for i, u in enumerate(held) if i % 10 < 1]
    late, stray = [u for u in treated if u not in buyers][:2]
    no_ads, unsubscribed = buyers[1], buyers[2]
    bought = SENT + DAY
    purchases = [
        {"user": u, "type": "purchase", "at": bought.isoformat(), "amount": 100,
         "order_id": f"o{n}"} | ({"coupon_code": codes[u]} if n < 5 else {})
        for n, u in enumerate(buyers)
    ] + [
        {"user": u, "type": "purchase", "at": bought.isoformat(), "amount": 100,
         "order_id": f"c{n}"}
        for n, u in enumerate(control_buyers)
    ] + [
        {"user": late, "type": "purchase", "at": (SENT + 3 * DAY).isoformat(), "amount": 100,
         "order_id": "late"},
        {"user": stray, "type": "purchase", "at": (SENT + 8 * DAY).isoformat(), "amount": 100,
         "order_id": "stray"},
    ]  # fmt: skip
    later = bought + HOUR
    unsubscribe = {"user": unsubscribed, "type": "unsubscribe", "at": later.isoformat()}
    ingest(store, tmp_path, now=UNTIL + DAY, events=[*purchases, unsubscribe])
    users_table = User.__table__
    with store.begin() as connection:
        connection.execute(
            sa.update(users_table).where(users_table.c.id == no_ads).values(ads_opt_in=False)
        )
    return {
        "store": store,
        "buyers": [*buyers, late],
        "control_buyers": control_buyers,
        "no_ads": no_ads,
        "unsubscribed": unsubscribed,
        "late": late,
        "stray": stray,
    }


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_only_treated_converters_with_ads_consent_are_exported(shop, tmp_path):
    store, buyers = shop["store"], shop["buyers"]
    left_out = {shop["no_ads"], shop["unsubscribed"]}
    expected = sorted(set(buyers) - left_out)

    result = export_converters(store, RULE, "csv", tmp_path, since=SINCE, until=UNTIL)

    assert result.converters == len(buyers)  # never the control group, never `stray`
    assert result.left_out == {"no_consent": 1, "unsubscribed": 1}
    assert (result.exported, result.skipped_no_identifier) == (len(expected), 0)
    assert [path.name for path in result.files] == [f"{RULE}.converters.csv.csv"]
    rows = read_csv(result.files[0])
    assert rows[0] == ["user_id", "email", "phone", "name", "country"]
    assert [row[0] for row in rows[1:]] == expected
    assert not set(shop["control_buyers"]) & {row[0] for row in rows}
    assert shop["late"] in expected and shop["stray"] not in {row[0] for row in rows}


def test_google_and_meta_get_their_own_hashes(shop, tmp_path):
    store = shop["store"]
    expected = sorted(set(shop["buyers"]) - {shop["no_ads"], shop["unsubscribed"]})
    phone_of = {u: int(u[1:]) % 2 == 1 for u in expected}

    google = export_converters(store, RULE, "google", tmp_path, since=SINCE, until=UNTIL)
    rows = read_csv(google.files[0])
    assert google.files[0].name == f"{RULE}.converters.google.csv"
    assert rows[0] == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    assert rows[1:] == [
        [
            sha256_hex(f"{u}@example.com"),
            sha256_hex("+8613800138000") if phone_of[u] else "",
            "",  # Google matches an address only with names, country and zip
            "",
            "",
            "",
        ]
        for u in expected
    ]

    meta = export_converters(store, RULE, "meta", tmp_path, since=SINCE, until=UNTIL)
    (document,) = [json.loads(path.read_text("utf-8")) for path in meta.files]
    assert document["payload"]["schema"] == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
    assert document["payload"]["data"] == [
        [
            sha256_hex(f"{u}@example.com"),
            sha256_hex("8613800138000") if phone_of[u] else "",  # Meta: no "+"
            "",
            "",
            sha256_hex("cn"),
        ]
        for u in expected
    ]
    assert document["session"]["estimated_num_total"] == len(expected)
    assert document["session"]["last_batch_flag"] is True


def test_the_period_and_until_bound_the_converters(shop, tmp_path):
    store = shop["store"]
    # Before anyone bought: no converters, an empty file with its header.
    early = export_converters(store, RULE, "csv", tmp_path, since=SINCE, until=SENT + HOUR)
    assert (early.converters, early.exported) == (0, 0)
    assert read_csv(early.files[0]) == [["user_id", "email", "phone", "name", "country"]]
    # Decisions before the period are not the period's.
    after = export_converters(store, RULE, "csv", tmp_path, since=T + HOUR, until=UNTIL)
    assert after.converters == 0
    # Until before the late purchase: its buyer has not converted yet.
    before = export_converters(store, RULE, "csv", tmp_path, since=SINCE, until=SENT + 2 * DAY)
    assert before.converters == len(shop["buyers"]) - 1
    rows = read_csv(before.files[0])
    assert shop["late"] not in {row[0] for row in rows} and len(rows) == len(shop["buyers"]) - 2


def test_the_report_suggests_the_exact_command_and_it_runs(shop, tmp_path):
    store = shop["store"]
    report = build_report(store, since=SINCE, until=UNTIL)

    (suggestion,) = report.suggestions
    assert suggestion["rule"] == RULE
    command = suggestion["command"]
    assert command.startswith(f"nudge audiences export-converters {RULE} --format google ")
    assert report.as_dict(store.settings.tz)["suggestions"] == [suggestion]
    text = render_report(report, store.settings.tz)
    assert text.splitlines()[-2:] == ["Suggestions:", f"  {suggestion['text']}"]
    assert command in suggestion["text"]

    argv = shlex.split(command)[1:] + ["--out", str(tmp_path / "seed"), "--json"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["converters"] == len(shop["buyers"])
    assert data["left_out"] == {"no_consent": 1, "unsubscribed": 1}
    assert data["files"] == [str(tmp_path / "seed" / f"{RULE}.converters.google.csv")]

    result = runner.invoke(app, shlex.split(command)[1:] + ["--out", str(tmp_path / "text")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{RULE}: {len(shop['buyers'])} converted users (decisions from ")
    assert lines[1] == (
        f"google: +{len(shop['buyers']) - 2} (0 without email or phone; left out 2 without "
        "ads consent: no_consent 1, unsubscribed 1)"
    )


def test_no_suggestion_without_a_significant_lift(shop):
    # Before anyone bought there is no lift, so nothing to seed a lookalike with.
    report = build_report(shop["store"], since=SINCE, until=SENT + HOUR)
    assert report.suggestions == []
    assert "Suggestions:" not in render_report(report, shop["store"].settings.tz)


def test_an_unknown_rule_gets_a_did_you_mean(shop, tmp_path):
    store = shop["store"]
    with pytest.raises(
        NotFoundError, match=r"no rule 'welcome-ofer' \(did you mean 'welcome-offer'\?\)"
    ):
        export_converters(store, "welcome-ofer", "csv", tmp_path, since=SINCE, until=UNTIL)
    with pytest.raises(NudgeError, match="unknown platform 'tiktok'"):
        export_converters(store, RULE, "tiktok", tmp_path, since=SINCE, until=UNTIL)

    result = runner.invoke(app, ["audiences", "export-converters", "welcome-ofer"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: no rule 'welcome-ofer' (did you mean 'welcome-offer'?)\n",
    )
    result = runner.invoke(
        app,
        ["audiences", "export-converters", RULE, "--since", "2026-11-02", "--until", "2026-11-01"],
    )
    assert result.exit_code == 1 and "is not before" in result.output


def test_a_rule_known_only_by_its_decisions_is_no_error(shop, tmp_path):
    store = shop["store"]
    (store.settings.rules_dir / f"{RULE}.yaml").unlink()  # deleted since it decided
    result = export_converters(store, RULE, "csv", tmp_path, since=SINCE, until=UNTIL)
    assert result.converters == len(shop["buyers"])
