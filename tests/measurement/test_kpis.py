"""Shop KPIs over a period, exact on a small shop loaded through the real ingest path.

The shop sells in CNY (1 USD = 7 CNY) in Asia/Shanghai; the period is the first
quarter of 2026, shop time: [2026-01-01 00:00, 2026-04-01 00:00). Every number
below is worked out by hand from the files in `load_shop`.

    user   first seen   purchases in the period (CNY)            before / after
    old    2025-12-10   01-20: 50                                 2025-12-15: 100
    a      2026-01-04   01-10: 200, 02-15: 100, 03-03: 60         (platinum: vip)
    b      2026-01-08   01-20: 300, refund 01-25: 100
    c      2026-02-01   02-05: 20 USD = 140, 03-10: 80
    d      2026-02-10   03-20: 50 (38 days after first seen)
    e      2026-03-01   - (visits only)
    f      2026-03-25   -                                         04-02: 999
    ghost  never        -

    orders 8, buyers 5 (old a b c d), gross 980, refunds 100, GMV 880, AOV 110.00,
    repeat buyers 2 (a, c) / 5 = 40%; new users 6 (a b c d e f), converted within
    30 days 3 (a b c) = 50%; new buyers 4 (a b c d).
    cohorts: 2026-01 {a, b}: GMV 360 + 200 = 560, LTV 280, retention 100% 50% 50%;
             2026-02 {c}: GMV 220, retention 100% 100%; 2026-03 {d}: GMV 50, 100%.
    email: 3 email_click events / 6 sent emails = 50%; ads: 1 ad_click / 4 impressions.
    spend: 700 CNY + 100 USD (700 CNY) + 200 CNY = 1600 CNY in the quarter (a EUR row is
    rejected: no rate); CAC 1600 / 4 = 400.00; ROAS 880 / 1600 = 0.55.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from typer.testing import CliRunner

from cli import app
from engine.config import load_settings
from engine.errors import NudgeError
from engine.ingest import ingest_files
from engine.measurement.kpis import shop_kpis
from engine.store import open_store
from engine.store.planning import OutboxAction

ZONE_OFFSET = "+08:00"
SINCE = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)  # 2026-01-01 00:00 shop time
UNTIL = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)  # 2026-04-01 00:00 shop time
NOW = datetime(2026, 4, 10, 4, 0, tzinfo=UTC)  # when the files are ingested

USERS_CSV = """id,member_tier
old,
a,platinum
b,
c,
d,
e,
f,
ghost,
"""

# Times without an offset are shop time (Asia/Shanghai).
EVENTS = [
    ("old", "visit", "2025-12-10T10:00:00", None, None),
    ("old", "purchase", "2025-12-15T10:00:00", "100", None),
    ("old", "purchase", "2026-01-20T10:00:00", "50", None),
    ("a", "visit", "2026-01-05T09:00:00", None, None),
    ("a", "purchase", "2026-01-10T09:00:00", "200", None),
    ("a", "email_click", "2026-01-11T09:00:00", None, None),
    ("a", "purchase", "2026-02-15T09:00:00", "100", None),
    ("a", "purchase", "2026-03-03T09:00:00", "60", None),
    ("a", "email_click", "2026-03-04T09:00:00", None, None),
    ("a", "ad_impression", "2026-01-04T09:00:00", None, None),
    ("b", "visit", "2026-01-08T09:00:00", None, None),
    ("b", "ad_impression", "2026-01-08T09:30:00", None, None),
    ("b", "purchase", "2026-01-20T09:00:00", "300", None),
    ("b", "refund", "2026-01-25T09:00:00", "100", None),
    ("c", "visit", "2026-02-01T09:00:00", None, None),
    ("c", "purchase", "2026-02-05T09:00:00", "20", "USD"),
    ("c", "email_click", "2026-02-06T09:00:00", None, None),
    ("c", "purchase", "2026-03-10T09:00:00", "80", None),
    ("c", "email_click", "2026-04-05T09:00:00", None, None),  # after the period
    ("d", "visit", "2026-02-10T09:00:00", None, None),
    ("d", "purchase", "2026-03-20T09:00:00", "50", None),
    ("e", "visit", "2026-03-01T09:00:00", None, None),
    ("e", "ad_impression", "2026-03-01T09:00:00", None, None),
    ("e", "ad_click", "2026-03-01T09:01:00", None, None),
    ("f", "ad_impression", "2026-03-25T09:00:00", None, None),
    ("f", "visit", "2026-03-25T09:01:00", None, None),
    ("f", "purchase", "2026-04-02T09:00:00", "999", None),  # after the period
]

SPEND_CSV = """date,channel,campaign,cost,currency
2026-01-15,google,brand,700,CNY
2026-02-15,google,brand,100,USD
2026-03-15,meta,,200,
2026-03-16,meta,spring,50,EUR
2026-04-01,google,brand,1000,CNY
2025-12-31,google,brand,500,CNY
"""

# (user, state, kind, sent_at): 6 emails sent in the period.
OUTBOX = [
    ("a", "sent", "email", "2026-01-06T10:00:00+08:00"),
    ("a", "sent", "email", "2026-03-01T10:00:00+08:00"),
    ("b", "sent", "email", "2026-01-09T10:00:00+08:00"),
    ("c", "sent", "email", "2026-02-02T10:00:00+08:00"),
    ("d", "sent", "email", "2026-02-11T10:00:00+08:00"),
    ("e", "sent", "email", "2026-03-31T23:59:59+08:00"),
    ("f", "sent", "email", "2026-04-01T00:00:00+08:00"),  # at `until`: not in [since, until)
    ("old", "sent", "email", "2025-12-31T23:59:59+08:00"),  # before the period
    ("b", "dead", "email", None),
    ("a", "sent", "sms", "2026-01-06T10:00:00+08:00"),
]


def write_config(project_dir, store_url: str) -> None:
    (project_dir / "nudge.toml").write_text(
        '[shop]\ntimezone = "Asia/Shanghai"\ncurrency = "CNY"\n'
        f'[database]\nurl = "{store_url}"\n'
        "[currency]\nrates = {USD = 7}\n",
        encoding="utf-8",
    )


def events_jsonl() -> str:
    lines = []
    for user, kind, at, amount, currency in EVENTS:
        row = {"user": user, "type": kind, "at": at}
        if amount is not None:
            row["amount"] = amount
        if currency is not None:
            row["currency"] = currency
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


def insert_outbox(connection) -> None:
    table = OutboxAction.__table__
    rows = []
    for number, (user, state, kind, sent_at) in enumerate(OUTBOX, start=1):
        sent = None if sent_at is None else datetime.fromisoformat(sent_at)
        stamp = sent or NOW
        rows.append(
            {
                "idempotency_key": f"k{number}",
                "decision_id": number,
                "run_id": 1,
                "rule_id": "welcome",
                "user_id": user,
                "kind": kind,
                "channel": kind,
                "variant": None,
                "priority": 0,
                "payload": {},
                "state": state,
                "reason": None,
                "attempts": 1,
                "next_attempt_at": stamp,
                "created_at": stamp,
                "updated_at": stamp,
                "sent_at": sent,
            }
        )
    connection.execute(table.insert(), rows)


@pytest.fixture
def shop(project_dir, store_url, monkeypatch):
    write_config(project_dir, store_url)
    store = open_store(load_settings(project_dir, environ={}))
    (project_dir / "users.csv").write_text(USERS_CSV, encoding="utf-8")
    (project_dir / "events.jsonl").write_text(events_jsonl(), encoding="utf-8")
    (project_dir / "spend.csv").write_text(SPEND_CSV, encoding="utf-8")
    paths = [project_dir / name for name in ("events.jsonl", "users.csv", "spend.csv")]
    report = ingest_files(store, paths, now=NOW)
    assert (report.users_upserted, report.events_inserted, report.spend_upserted) == (8, 27, 5)
    assert [str(reject) for reject in report.rejected] == [
        f"{project_dir / 'spend.csv'}:5: no exchange rate for EUR: add it to nudge.toml as "
        "[currency] rates = {EUR = N}, where 1 EUR = N CNY"
    ]
    with store.begin() as connection:
        insert_outbox(connection)
    monkeypatch.chdir(project_dir)
    try:
        yield store
    finally:
        store.dispose()


def kpis(store, since=SINCE, until=UNTIL):
    with store.connect() as connection:
        return shop_kpis(connection, store.settings, since=since, until=until)


def test_totals_of_the_quarter(shop):
    result = kpis(shop)
    assert result["currency"] == "CNY"
    assert result["empty"] is False
    assert result["conversion_window_days"] == 30
    assert result["totals"] == {
        "users": 7,  # ghost was never seen
        "buyers": 5,
        "repeat_buyers": 2,
        "orders": 8,
        "new_users": 6,
        "converted": 3,
        "new_buyers": 4,
        "gross": Decimal("980.00"),
        "refunds": Decimal("100.00"),
        "gmv": Decimal("880.00"),
        "aov": Decimal("110.00"),
        "repeat_purchase_rate": 0.4,
        "first_purchase_conversion": 0.5,
    }


def test_per_stage_as_of_until(shop):
    stages = {row["stage"]: row for row in kpis(shop)["stages"]}
    assert list(stages) == [
        "new_visitor",
        "prospect",
        "registered",
        "first_purchase",
        "repeat_buyer",
        "vip",
        "lapsed_member",
        "churned",
    ]
    summary = {
        stage: (row["users"], row["buyers"], row["orders"], row["gmv"], row["new_users"])
        for stage, row in stages.items()
        if row["users"]
    }
    assert summary == {
        "new_visitor": (1, 0, 0, Decimal("0.00"), 1),  # f: first seen 03-25
        "prospect": (1, 0, 0, Decimal("0.00"), 1),  # e: first seen 31 days before until
        "first_purchase": (2, 2, 2, Decimal("250.00"), 2),  # b (300 - 100), d
        "repeat_buyer": (2, 2, 3, Decimal("270.00"), 1),  # old (one order here), c
        "vip": (1, 1, 3, Decimal("360.00"), 1),  # a, platinum
    }
    assert stages["first_purchase"]["aov"] == Decimal("125.00")
    assert stages["first_purchase"]["first_purchase_conversion"] == 0.5  # b yes, d too late
    assert stages["first_purchase"]["repeat_purchase_rate"] == 0.0
    assert stages["repeat_buyer"]["repeat_purchase_rate"] == 0.5  # c, not old
    assert stages["repeat_buyer"]["share"] == 0.2857
    assert stages["registered"]["aov"] is None
    assert stages["registered"]["first_purchase_conversion"] is None
    assert stages["churned"]["share"] == 0.0


def test_cohorts_ltv_and_retention(shop):
    cohorts = kpis(shop)["cohorts"]
    assert [
        (row["cohort"], row["size"], row["gmv"], row["ltv"], row["retention"]) for row in cohorts
    ] == [
        ("2026-01", 2, Decimal("560.00"), Decimal("280.00"), [1.0, 0.5, 0.5]),
        ("2026-02", 1, Decimal("220.00"), Decimal("220.00"), [1.0, 1.0]),
        ("2026-03", 1, Decimal("50.00"), Decimal("50.00"), [1.0]),
    ]
    assert cohorts[0]["buyers_by_month"] == [2, 1, 1]
    assert cohorts[0]["starts"] == SINCE


def test_cohorts_from_the_first_purchase_when_the_period_has_no_start(shop):
    cohorts = kpis(shop, since=None)["cohorts"]
    assert [(row["cohort"], row["size"], row["retention"]) for row in cohorts] == [
        # old: first purchase in December, bought again in January
        ("2025-12", 1, [1.0, 1.0, 0.0, 0.0]),
        ("2026-01", 2, [1.0, 0.5, 0.5]),
        ("2026-02", 1, [1.0, 1.0]),
        ("2026-03", 1, [1.0]),
    ]
    assert cohorts[0]["gmv"] == Decimal("150.00")


def test_click_through_rates(shop):
    assert kpis(shop)["ctr"] == {
        "email": {"sent": 6, "clicks": 3, "ctr": 0.5},
        "ads": {"impressions": 4, "clicks": 1, "ctr": 0.25},
    }


def test_spend_cac_and_roas(shop):
    spend = kpis(shop)["spend"]
    assert spend == {
        "first_day": date(2026, 1, 1),
        "last_day": date(2026, 3, 31),
        "rows": 3,
        "cost": Decimal("1600.00"),
        "channels": [
            {"channel": "google", "cost": Decimal("1400.00"), "rows": 2},
            {"channel": "meta", "cost": Decimal("200.00"), "rows": 1},
        ],
        "new_buyers": 4,
        "cac": Decimal("400.00"),
        "revenue": Decimal("880.00"),
        "roas": 0.55,
    }


def test_a_period_starting_mid_day_leaves_that_day_s_spend_out(shop):
    # Days count when their first instant (00:00 shop time) is in the period.
    since = datetime(2026, 1, 15, 1, 0, tzinfo=UTC)  # 2026-01-15 09:00 shop time
    spend = kpis(shop, since=since)["spend"]
    assert (spend["first_day"], spend["cost"]) == (date(2026, 1, 16), Decimal("900.00"))


def test_an_empty_period_says_so(shop):
    since = datetime(2027, 1, 1, tzinfo=UTC)
    result = kpis(shop, since=since, until=datetime(2027, 2, 1, tzinfo=UTC))
    assert result["empty"] is True
    assert result["totals"] == {
        "users": 8 - 1,
        "buyers": 0,
        "repeat_buyers": 0,
        "orders": 0,
        "new_users": 0,
        "converted": 0,
        "new_buyers": 0,
        "gross": Decimal("0.00"),
        "refunds": Decimal("0.00"),
        "gmv": Decimal("0.00"),
        "aov": None,
        "repeat_purchase_rate": None,
        "first_purchase_conversion": None,
    }
    assert result["cohorts"] == []
    assert result["ctr"] == {
        "email": {"sent": 0, "clicks": 0, "ctr": None},
        "ads": {"impressions": 0, "clicks": 0, "ctr": None},
    }
    spend = result["spend"]
    assert (spend["cost"], spend["cac"], spend["roas"]) == (Decimal("0.00"), None, None)


def test_an_empty_store_has_no_cohorts_and_no_division_error(project_dir, store_url):
    write_config(project_dir, store_url)
    store = open_store(load_settings(project_dir, environ={}))
    try:
        result = kpis(store, since=None)
    finally:
        store.dispose()
    assert result["empty"] is True
    assert result["totals"]["users"] == 0
    assert result["totals"]["aov"] is None
    assert result["cohorts"] == []


def test_since_must_be_before_until(shop):
    with pytest.raises(NudgeError, match="must be before"):
        kpis(shop, since=UNTIL, until=UNTIL)


def test_the_kpis_do_not_loop_over_users(shop):
    """A handful of statements, whatever the number of users (set-based SQL)."""
    statements = []

    def count(*_args):
        statements.append(1)

    with shop.connect() as connection:
        sa.event.listen(connection, "before_cursor_execute", count)
        shop_kpis(connection, shop.settings, since=SINCE, until=UNTIL)
    assert len(statements) <= 8


# ---------------------------------------------------------------- nudge stats


def test_stats_command_prints_the_period_sections(shop):
    result = CliRunner().invoke(app, ["stats", "--since", "2026-01-01", "--until", "2026-04-01"])
    assert result.exit_code == 0, result.output
    text = result.output
    period = text[text.index("Period ") : text.index("Money in CNY")]
    assert period == (
        "Period 2026-01-01 00:00:00+08:00 to 2026-04-01 00:00:00+08:00\n"
        "KPI                                  value\n"
        "-----------------------------------  ----------\n"
        "buyers                               5\n"
        "orders                               8\n"
        "GMV (purchases - refunds)            880.00 CNY\n"
        "refunds                              100.00 CNY\n"
        "AOV                                  110.00 CNY\n"
        "repeat-purchase rate                 40.0%\n"
        "new users (first seen)               6\n"
        "first-purchase conversion (30 days)  50.0%\n"
        "new buyers (first purchase)          4\n"
        "\n"
        "stage at until  buyers  orders  GMV         AOV         repeat  new  converted\n"
        "--------------  ------  ------  ----------  ----------  ------  ---  ---------\n"
        "new_visitor     0       0       0.00 CNY    -           -       1    0.0%\n"
        "prospect        0       0       0.00 CNY    -           -       1    0.0%\n"
        "registered      0       0       0.00 CNY    -           -       0    -\n"
        "first_purchase  2       2       250.00 CNY  125.00 CNY  0.0%    2    50.0%\n"
        "repeat_buyer    2       3       270.00 CNY  90.00 CNY   50.0%   1    100.0%\n"
        "vip             1       3       360.00 CNY  120.00 CNY  100.0%  1    100.0%\n"
        "lapsed_member   0       0       0.00 CNY    -           -       0    -\n"
        "churned         0       0       0.00 CNY    -           -       0    -\n"
        "\n"
        "Cohorts by first-purchase month (LTV: GMV per buyer to date)\n"
        "cohort   size  GMV         LTV         M0      M1      M2\n"
        "-------  ----  ----------  ----------  ------  ------  -----\n"
        "2026-01  2     560.00 CNY  280.00 CNY  100.0%  50.0%   50.0%\n"
        "2026-02  1     220.00 CNY  220.00 CNY  100.0%  100.0%\n"
        "2026-03  1     50.00 CNY   50.00 CNY   100.0%\n"
        "\n"
        "Click-through\n"
        "channel            delivered  clicks  CTR\n"
        "-----------------  ---------  ------  -----\n"
        "email (sent)       6          3       50.0%\n"
        "ads (impressions)  4          1       25.0%\n"
        "\n"
        "Ad spend 2026-01-01 to 2026-03-31\n"
        "channel  spend\n"
        "-------  ------------\n"
        "google   1,400.00 CNY\n"
        "meta     200.00 CNY\n"
        "total    1,600.00 CNY\n"
        "new buyers 4, CAC 400.00 CNY, ROAS 0.55 (GMV 880.00 CNY / spend)\n"
        "\n"
    )
    # The KPIs as of T come first, as before: to date, at or before T.
    assert text.startswith("Shop KPIs as of 2026-04-01 00:00:00+08:00\n")


def test_stats_json_keeps_today_s_keys_and_adds_the_period(shop):
    with freeze_time(UNTIL):  # --until defaults to now
        result = CliRunner().invoke(app, ["stats", "--since", "2026-01-01", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {
        "as_of",
        "currency",
        "users",
        "buyers",
        "orders",
        "gmv",
        "aov",
        "repeat_purchase_rate",
        "first_purchase_conversion",
        "stages",
    } < set(data)
    assert data["as_of"] == data["until"] == "2026-03-31 16:00:00+00:00"
    assert data["since"] == "2025-12-31 16:00:00+00:00"
    assert data["period"]["gmv"] == "880.00"
    assert data["period"]["first_purchase_conversion"] == 0.5
    assert data["cohorts"][0]["retention"] == [1.0, 0.5, 0.5]
    assert data["ctr"]["email"]["ctr"] == 0.5
    assert data["spend"]["cac"] == "400.00"
    assert data["spend"]["roas"] == 0.55
    assert data["spend"]["first_day"] == "2026-01-01"


def test_stats_on_an_empty_period(shop):
    result = CliRunner().invoke(app, ["stats", "--since", "2027-01-01", "--until", "2027-02-01"])
    assert result.exit_code == 0, result.output
    assert (
        "Nothing happened in this period: no purchases, refunds, new users, emails sent, "
        "clicks or ad spend.\n"
    ) in result.output
    assert "No first purchases in this period.\n" in result.output
    assert "Ad spend" not in result.output


def test_stats_options_are_checked(shop):
    runner = CliRunner()
    result = runner.invoke(app, ["stats", "--since", "soon"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: --since: cannot read 'soon' as a time; use ISO 8601, "
        "e.g. 2026-11-11T20:00:00+08:00 or 2026-11-11T20:00\n",
    )
    result = runner.invoke(app, ["stats", "--at", "2026-04-01", "--until", "2026-04-01"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: --at and --until are the same instant: give one of them\n",
    )
    result = runner.invoke(app, ["stats", "--since", "2026-04-01", "--until", "2026-04-01"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: --since (2026-04-01 00:00:00+08:00) must be before "
        "--until (2026-04-01 00:00:00+08:00)\n",
    )
