"""Money in the shop currency: ingest converts other currencies, every sum adds like with like.

The shop sells in CNY and has a rate for USD (1 USD = 7.1 CNY). Purchases arrive in
both; the profile, `sum("purchase.amount")` in a rule condition and `nudge stats`
must all see the USD purchase as its CNY value, on SQLite and PostgreSQL (the COPY
path and the executemany path both carry original_amount / original_currency).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.conditions import Catalog, CompileContext, check_condition, matching_users
from engine.config import load_settings
from engine.ingest import ingest_files
from engine.store import open_store
from engine.store.people import Event, Profile

NOW = datetime(2026, 3, 20, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai
DAY = timedelta(days=1)
events = Event.__table__
profiles = Profile.__table__


def write_config(project_dir, store_url: str, rates: str) -> None:
    (project_dir / "nudge.toml").write_text(
        '[shop]\ntimezone = "Asia/Shanghai"\ncurrency = "CNY"\n'
        f'[database]\nurl = "{store_url}"\n'
        f"[currency]\nrates = {rates}\n",
        encoding="utf-8",
    )


@pytest.fixture
def shop(project_dir, store_url):
    write_config(project_dir, store_url, "{USD = 7.1}")
    store = open_store(load_settings(project_dir, environ={}))
    try:
        yield store
    finally:
        store.dispose()


def at(days_ago: int) -> str:
    return (NOW - days_ago * DAY).isoformat()


def jsonl(path, rows) -> object:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


PURCHASES = [
    # 100 USD = 710.00 CNY
    {"user": "ann", "type": "purchase", "at": at(3), "amount": "100", "currency": "USD"},
    {"user": "ann", "type": "purchase", "at": at(2), "amount": 290, "currency": "cny"},
    # 0.35 USD = 2.485 CNY: half-even rounds the tie to 2.48 (half-up would give 2.49)
    {"user": "ann", "type": "purchase", "at": at(1), "amount": "0.35", "currency": "USD"},
    {"user": "bo", "type": "purchase", "at": at(5), "amount": "500.00"},
    # 10 USD refunded = 71.00 CNY
    {"user": "bo", "type": "refund", "at": at(4), "amount": 10, "currency": "USD"},
]


def stored(store) -> list[tuple]:
    columns = ("user_id", "type", "amount", "currency", "original_amount", "original_currency")
    query = sa.select(*(events.c[c] for c in columns)).order_by(events.c.occurred_at)
    with store.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def test_other_currencies_are_stored_converted_with_what_the_shop_sent(shop, tmp_path):
    path = jsonl(
        tmp_path / "events.jsonl",
        [
            *PURCHASES,
            {"user": "cy", "type": "purchase", "at": at(1), "amount": 5, "currency": "EUR"},
        ],
    )
    report = ingest_files(shop, [path], now=NOW)

    assert [str(r) for r in report.rejected] == [
        f"{path}:6: no exchange rate for EUR: add it to nudge.toml as "
        "[currency] rates = {EUR = N}, where 1 EUR = N CNY"
    ]
    # Ordered by time: bo's purchase, bo's refund, then ann's three purchases.
    assert stored(shop) == [
        ("bo", "purchase", Decimal("500.00"), "CNY", None, None),
        ("bo", "refund", Decimal("71.00"), "CNY", Decimal("10.00"), "USD"),
        ("ann", "purchase", Decimal("710.00"), "CNY", Decimal("100.00"), "USD"),
        ("ann", "purchase", Decimal("290.00"), "CNY", None, None),
        ("ann", "purchase", Decimal("2.48"), "CNY", Decimal("0.35"), "USD"),
    ]
    with shop.connect() as connection:
        rows = connection.execute(
            sa.select(
                profiles.c.user_id, profiles.c.total_spent, profiles.c.avg_order_value
            ).order_by(profiles.c.user_id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("ann", Decimal("1002.48"), Decimal("334.16")),  # 710 + 290 + 2.48, over 3 orders
        ("bo", Decimal("429.00"), Decimal("429.00")),  # 500 - 71 refunded
    ]


def test_a_changed_rate_does_not_store_a_purchase_twice(shop, tmp_path):
    path = jsonl(tmp_path / "events.jsonl", PURCHASES)
    ingest_files(shop, [path], now=NOW)
    settings = shop.settings
    new_rate = settings.model_copy(
        update={"currency": settings.currency.model_copy(update={"rates": {"USD": Decimal("7.3")}})}
    )
    again = ingest_files(replace(shop, settings=new_rate), [path], now=NOW)
    # The source id hashes what the shop sent (100 USD), not today's conversion.
    assert (again.events_inserted, again.duplicates_skipped) == (0, len(PURCHASES))


def _matching(store, condition: str) -> set[str]:
    expr = check_condition(condition, catalog=Catalog.for_trigger("schedule"))
    with store.connect() as connection:
        ctx = CompileContext.for_connection(connection, store.settings, NOW)
        return set(connection.execute(matching_users(expr, ctx)).scalars())


def test_rule_conditions_add_up_the_shop_currency(shop, tmp_path):
    ingest_files(shop, [jsonl(tmp_path / "events.jsonl", PURCHASES)], now=NOW)

    # ann: 710 + 290 + 2.48 CNY; adding the USD figures as sent would give 390.35.
    assert _matching(shop, 'sum("purchase.amount", within="30d") >= 1002.48') == {"ann"}
    assert _matching(shop, 'sum("purchase.amount", within="30d") > 1002.48') == set()
    assert _matching(shop, 'sum("purchase.amount", within="30d") >= 500') == {"ann", "bo"}
    assert _matching(shop, 'sum("refund.amount") == 71') == {"bo"}
    assert _matching(shop, "total_spent >= 1000") == {"ann"}


def test_stats_are_in_the_shop_currency(shop, tmp_path, project_dir, monkeypatch):
    ingest_files(shop, [jsonl(tmp_path / "events.jsonl", PURCHASES)], now=NOW)
    monkeypatch.chdir(project_dir)
    runner = CliRunner()

    result = runner.invoke(app, ["stats", "--at", NOW.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # GMV: 1002.48 (ann) + 429.00 (bo); 4 orders.
    assert (data["currency"], data["gmv"], data["aov"], data["orders"]) == (
        "CNY",
        "1431.48",
        "357.87",
        4,
    )

    result = runner.invoke(app, ["stats", "--at", NOW.isoformat()])
    assert result.exit_code == 0, result.output
    assert "GMV                        1,431.48 CNY\n" in result.stdout
    assert "AOV                        357.87 CNY\n" in result.stdout
    assert result.stdout.endswith(
        "Money in CNY, the shop currency: amounts in other currencies are converted at "
        "ingest ([currency] rates in nudge.toml).\n"
    )


def test_a_converted_amount_out_of_range_is_rejected(shop, tmp_path):
    path = jsonl(
        tmp_path / "events.jsonl",
        [
            {
                "user": "ann",
                "type": "purchase",
                "at": at(1),
                "amount": "999999999999.99",
                "currency": "USD",
            }
        ],
    )
    report = ingest_files(shop, [path], now=NOW)
    assert [r.reason for r in report.rejected] == [
        "amount 999999999999.99 USD is 7099999999999.93 CNY at the rate 7.1: out of range "
        "(at most 999999999999.99)"
    ]
    assert stored(shop) == []
