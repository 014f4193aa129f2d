"""Shop KPIs, exact on a hand-made shop; `nudge stats` and `nudge users show`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from stats_data import DAY, T, load_shop
from typer.testing import CliRunner

from cli import app
from engine.stats import shop_stats


@pytest.fixture
def shop(store, project_dir, monkeypatch):
    with store.begin() as connection:
        load_shop(connection)
    monkeypatch.chdir(project_dir)
    return store


def stage_row(result, stage):
    return next(row for row in result["stages"] if row["stage"] == stage)


def test_kpis_on_a_hand_made_shop(shop):
    with shop.connect() as connection:
        result = shop_stats(connection, shop.settings, T)
    assert {k: v for k, v in result.items() if k != "stages"} == {
        "as_of": T,
        "currency": "CNY",
        "users": 7,  # hal was never seen
        "buyers": 4,  # alice, bob, eve, fang; gus buys after T
        "orders": 5,
        "gmv": Decimal("1630.50"),  # 300.50 + (300 - 50 refund) + 80 + 1000
        "aov": Decimal("326.10"),
        "repeat_purchase_rate": 0.25,
        "first_purchase_conversion": 0.5714,
    }
    assert [(row["stage"], row["users"]) for row in result["stages"]] == [
        ("new_visitor", 1),
        ("prospect", 1),
        ("registered", 1),
        ("first_purchase", 1),
        ("repeat_buyer", 1),
        ("vip", 1),
        ("lapsed_member", 1),
        ("churned", 0),
    ]
    assert stage_row(result, "repeat_buyer") == {
        "stage": "repeat_buyer",
        "users": 1,
        "share": 0.1429,
        "buyers": 1,
        "orders": 2,
        "gmv": Decimal("300.50"),
        "aov": Decimal("150.25"),
    }
    assert stage_row(result, "first_purchase")["gmv"] == Decimal("250.00")
    assert stage_row(result, "prospect")["aov"] is None
    assert stage_row(result, "churned")["share"] == 0.0


def test_kpis_later_include_the_later_purchase(shop):
    with shop.connect() as connection:
        result = shop_stats(connection, shop.settings, T + 2 * DAY)
    assert (result["buyers"], result["orders"], result["gmv"]) == (5, 6, Decimal("2629.50"))
    assert stage_row(result, "first_purchase")["users"] == 2  # bob and gus


def test_stats_command_prints_tables_in_the_shop_currency(shop):
    result = CliRunner().invoke(app, ["stats", "--at", "2026-03-01T12:00"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Shop KPIs as of 2026-03-01 12:00:00+08:00\n"
        "KPI                        value\n"
        "-------------------------  ------------\n"
        "users seen                 7\n"
        "buyers                     4\n"
        "orders                     5\n"
        "GMV                        1,630.50 CNY\n"
        "AOV                        326.10 CNY\n"
        "repeat-purchase rate       25.0%\n"
        "first-purchase conversion  57.1%\n"
        "\n"
        "stage           users  share  buyers  orders  GMV           AOV\n"
        "--------------  -----  -----  ------  ------  ------------  ------------\n"
        "new_visitor     1      14.3%  0       0       0.00 CNY      -\n"
        "prospect        1      14.3%  0       0       0.00 CNY      -\n"
        "registered      1      14.3%  0       0       0.00 CNY      -\n"
        "first_purchase  1      14.3%  1       1       250.00 CNY    250.00 CNY\n"
        "repeat_buyer    1      14.3%  1       2       300.50 CNY    150.25 CNY\n"
        "vip             1      14.3%  1       1       1,000.00 CNY  1,000.00 CNY\n"
        "lapsed_member   1      14.3%  1       1       80.00 CNY     80.00 CNY\n"
        "churned         0      0.0%   0       0       0.00 CNY      -\n"
        # New sections (no --since: the period is everything before T; see
        # tests/measurement/test_kpis.py for the period sections).
        "\n"
        "Cohorts by first-purchase month (LTV: GMV per buyer to date)\n"
        "cohort   size  GMV           LTV         M0      M1    M2    M3    M4\n"
        "-------  ----  ------------  ----------  ------  ----  ----  ----  ----\n"
        "2025-11  1     80.00 CNY     80.00 CNY   100.0%  0.0%  0.0%  0.0%  0.0%\n"
        "2026-02  3     1,550.50 CNY  516.83 CNY  100.0%  0.0%\n"
        "\n"
        "Click-through\n"
        "channel            delivered  clicks  CTR\n"
        "-----------------  ---------  ------  ---\n"
        "email (sent)       0          0       -\n"
        "ads (impressions)  0          0       -\n"
        "\n"
        "Money in CNY, the shop currency: amounts in other currencies are converted at "
        "ingest ([currency] rates in nudge.toml).\n"
    )


def test_stats_json(shop):
    result = CliRunner().invoke(app, ["stats", "--at", "2026-03-01T04:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["gmv"] == "1630.50"
    assert data["as_of"] == "2026-03-01 04:00:00+00:00"
    assert data["stages"][4]["orders"] == 2
    # New keys beside today's: the period (here everything before T), cohorts, CTR, spend.
    assert (data["since"], data["until"]) == (None, data["as_of"])
    assert data["period"]["gmv"] == "1630.50"
    assert [row["cohort"] for row in data["cohorts"]] == ["2025-11", "2026-02"]
    assert data["ctr"]["email"] == {"sent": 0, "clicks": 0, "ctr": None}
    assert (data["spend"]["rows"], data["spend"]["cac"], data["spend"]["roas"]) == (0, None, None)


def test_stats_rejects_a_bad_time(shop):
    result = CliRunner().invoke(app, ["stats", "--at", "yesterday"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: --at: cannot read 'yesterday' as a time; use ISO 8601, "
        "e.g. 2026-11-11T20:00:00+08:00 or 2026-11-11T20:00\n"
    )


def test_users_show_unknown_id_suggests_a_close_one(shop):
    result = CliRunner().invoke(app, ["users", "show", "alise"])
    assert result.exit_code == 1
    assert result.output == "Error: no user 'alise' (did you mean 'alice'?)\n"
    result = CliRunner().invoke(app, ["users", "show", "zzzzzz"])
    assert result.output == "Error: no user 'zzzzzz'\n"


def test_users_show_json(shop):
    from freezegun import freeze_time

    with freeze_time(datetime(2026, 3, 1, 4, 0, tzinfo=UTC)):
        result = CliRunner().invoke(app, ["users", "show", "alice", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["user"]["name"] == "Alice"
    assert data["consent"] == {
        "email_opt_in": True,
        "sms_opt_in": False,
        "ads_opt_in": False,
        "unsubscribed_at": None,
    }
    assert data["tags"] == ["beta", "wholesale"]
    assert data["profile"]["purchase_count"] == 2
    assert data["profile"]["total_spent"] == "300.50"
    assert data["stage"] == "repeat_buyer"
    assert [e["type"] for e in data["recent_events"]] == ["purchase", "purchase"]


def test_users_show_table(shop):
    result = CliRunner().invoke(app, ["users", "show", "fang"])
    assert result.exit_code == 0, result.output
    assert "name             王芳\n" in result.output
    assert "2026-02-28 12:00:00+08:00  purchase  1000.00 CNY  o6" in result.output
