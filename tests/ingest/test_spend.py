"""Ad spend files: detected by their columns, converted to the shop currency, located
rejects, and a re-import replaces each (date, channel, campaign) instead of adding it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from engine.config import load_settings
from engine.errors import IngestError
from engine.ingest import ingest_files
from engine.store import open_store
from engine.store.marketing import AdSpend

NOW = datetime(2026, 3, 20, 4, 0, tzinfo=UTC)
ad_spend = AdSpend.__table__


@pytest.fixture
def shop(project_dir, store_url, monkeypatch):
    (project_dir / "nudge.toml").write_text(
        '[shop]\ntimezone = "Asia/Shanghai"\ncurrency = "CNY"\n'
        f'[database]\nurl = "{store_url}"\n'
        "[currency]\nrates = {USD = 7.1}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(project_dir)
    store = open_store(load_settings(project_dir, environ={}))
    try:
        yield store
    finally:
        store.dispose()


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def stored(store) -> list[tuple]:
    columns = [ad_spend.c[name] for name in ("date", "channel", "campaign", "cost", "currency")]
    columns += [ad_spend.c.original_cost, ad_spend.c.original_currency, ad_spend.c.ingested_at]
    query = sa.select(*columns).order_by(ad_spend.c.date, ad_spend.c.channel, ad_spend.c.campaign)
    with store.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


SPEND_CSV = (
    "date,channel,campaign,cost,currency\n"
    "2026-03-01,google,brand,1200.50,CNY\n"
    "2026-03-01,google,generic,100,USD\n"  # 710.00 CNY
    "2026-03-01,meta,,80,\n"  # no campaign, shop currency
    "2026-03-02,meta,spring,50,EUR\n"  # no rate: rejected
    "2026-03-02,google,brand,-5,\n"
    "2026-03-02T10:00,google,brand,5,\n"
    "2026-03-02,,brand,5,\n"
    "2026-03-01,google,brand,99,\n"  # the same key as line 2
)


def test_a_spend_file_is_converted_and_its_bad_rows_located(shop, project_dir):
    path = write(project_dir / "spend.csv", SPEND_CSV)
    report = ingest_files(shop, [path], now=NOW)
    assert report.files[0].kind == "spend"
    assert (report.rows_read, report.spend_upserted, report.rejected_count) == (8, 3, 5)
    assert report.events_inserted == report.users_upserted == 0
    assert [str(reject) for reject in report.rejected] == [
        f"{path}:5: no exchange rate for EUR: add it to nudge.toml as [currency] rates = "
        "{EUR = N}, where 1 EUR = N CNY",
        f"{path}:6: cost must not be negative, got -5",
        f"{path}:7: date must be a calendar day YYYY-MM-DD, got '2026-03-02T10:00'",
        f"{path}:8: missing required field 'channel'",
        f"{path}:9: 2026-03-01 / 'google' / campaign 'brand' is already given on line 2: "
        "one row per date, channel and campaign",
    ]
    day = date(2026, 3, 1)
    assert stored(shop) == [
        (day, "google", "brand", Decimal("1200.50"), "CNY", None, None, NOW),
        (day, "google", "generic", Decimal("710.00"), "CNY", Decimal("100.00"), "USD", NOW),
        (day, "meta", "", Decimal("80.00"), "CNY", None, None, NOW),
    ]
    rejects = (project_dir / "spend.csv.rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(rejects[0])["raw"] == "2026-03-02,meta,spring,50,EUR"


def test_re_importing_replaces_each_day_channel_and_campaign(shop, project_dir):
    first = write(project_dir / "spend.jsonl", "")
    first.write_text(
        '{"date": "2026-03-01", "channel": "google", "campaign": "brand", "cost": 100}\n'
        '{"date": "2026-03-01", "channel": "google", "campaign": "generic", "cost": 10, '
        '"currency": "USD"}\n',
        encoding="utf-8",
    )
    ingest_files(shop, [first], now=NOW)
    again = ingest_files(shop, [first], now=NOW + timedelta(days=1))
    assert (again.spend_upserted, again.rejected_count) == (2, 0)
    assert [row[3] for row in stored(shop)] == [Decimal("100.00"), Decimal("71.00")]
    # The platform restated brand's spend: the new cost replaces the stored one, and a
    # cost now in the shop currency forgets the old original currency.
    restated = write(
        project_dir / "restated.csv",
        "date,channel,campaign,cost\n2026-03-01,google,brand,120\n2026-03-01,google,generic,70\n",
    )
    later = NOW + timedelta(days=2)
    report = ingest_files(shop, [restated], now=later)
    assert report.spend_upserted == 2
    assert stored(shop) == [
        (date(2026, 3, 1), "google", "brand", Decimal("120.00"), "CNY", None, None, later),
        (date(2026, 3, 1), "google", "generic", Decimal("70.00"), "CNY", None, None, later),
    ]


def test_jsonl_rows_with_unknown_fields_are_rejected(shop, project_dir):
    path = write(
        project_dir / "spend.jsonl",
        '{"date": "2026-03-01", "channel": "google", "campaing": "brand", "cost": 5}\n'
        '{"date": "2026-03-01", "channel": "google", "cost": 5}\n',
    )
    report = ingest_files(shop, [path], now=NOW, kind="spend")
    assert [str(reject) for reject in report.rejected] == [
        f"{path}:1: unknown field 'campaing': spend rows have date, channel, campaign, "
        "cost, currency"
    ]
    assert report.spend_upserted == 1


def test_a_csv_with_an_unknown_or_missing_column_is_refused_whole(shop, project_dir):
    path = write(project_dir / "spend.csv", "date,channel,campaing,cost\n2026-03-01,g,b,5\n")
    with pytest.raises(IngestError) as error:
        ingest_files(shop, [path], now=NOW)
    assert str(error.value) == (
        f"{path}: unknown spend column(s) 'campaing': spend files have date, channel, "
        "campaign, cost, currency"
    )
    path = write(project_dir / "spend.csv", "date,campaign,cost\n2026-03-01,b,5\n")
    with pytest.raises(IngestError, match=r"a spend file needs the column\(s\) 'channel'"):
        ingest_files(shop, [path], now=NOW)
    assert stored(shop) == []


def test_kind_detection_and_the_override(shop, project_dir):
    path = write(project_dir / "costs.txt", "day,where,amount\n2026-03-01,google,5\n")
    with pytest.raises(IngestError, match="cannot tell whether it holds users, events or ad"):
        ingest_files(shop, [path], now=NOW)
    with pytest.raises(IngestError, match="unknown kind 'ads': use users, events or spend"):
        ingest_files(shop, [path], now=NOW, kind="ads")


def test_nudge_ingest_spend_exit_codes(shop, project_dir):
    from cli import app

    write(project_dir / "spend.csv", "date,channel,cost,currency\n2026-03-01,google,5,EUR\n")
    result = CliRunner().invoke(app, ["ingest", "--kind", "spend", "spend.csv", "--json"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert (report["files"][0]["kind"], report["spend_upserted"]) == ("spend", 0)
    assert report["rejected"][0]["line"] == 2
    write(project_dir / "spend.csv", "date,channel,cost\n2026-03-01,google,5\n")
    result = CliRunner().invoke(app, ["ingest", "spend.csv", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spend_upserted"] == 1
