"""`nudge ingest` through typer's CliRunner: output and exit codes."""

from __future__ import annotations

import json
from decimal import Decimal

import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from engine.store.people import Event

runner = CliRunner()
events = Event.__table__


def test_rejects_are_listed_and_exit_code_is_2(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    (project_dir / "events.csv").write_text(
        "user,type,at,amount\n"
        "u1,purchase,2026-03-01T10:00:00Z,10\n"
        "u1,purchase,2026-03-01T11:00:00Z,-1\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["ingest", "events.csv"])
    assert result.exit_code == 2
    assert result.stderr == (
        "events.csv:3: amount must not be negative, got -1\n"
        "rejected rows written to events.csv.rejects.jsonl\n"
    )
    assert result.stdout == (
        "2 rows read from 1 file: 0 users upserted, 1 user created by events, "
        "1 event stored, 0 duplicates skipped, 1 rejected\n"
    )

    again = runner.invoke(app, ["ingest", "events.csv", "--json"])
    assert again.exit_code == 2
    report = json.loads(again.stdout)
    assert (report["events_inserted"], report["duplicates_skipped"]) == (0, 1)


def test_clean_import_exits_0(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    result = runner.invoke(app, ["ingest", "-"], input='{"id": "u1", "email": "a@example.com"}\n')
    assert result.exit_code == 0
    assert result.stdout == (
        "1 row read from 1 file: 1 user upserted, 0 users created by events, "
        "0 events stored, 0 duplicates skipped, 0 rejected\n"
    )


def test_missing_file_is_an_error_with_exit_code_1(store, project_dir, monkeypatch):
    monkeypatch.chdir(project_dir)
    result = runner.invoke(app, ["ingest", "nope.jsonl"])
    assert result.exit_code == 1
    assert result.stderr == "Error: cannot read nope.jsonl: No such file or directory\n"


def test_an_amount_out_of_range_is_a_rejected_row_not_a_crash(store, project_dir, monkeypatch):
    # Both used to crash the whole import with decimal.InvalidOperation, storing nothing.
    monkeypatch.chdir(project_dir)
    (project_dir / "events.jsonl").write_text(
        '{"user": "u1", "type": "purchase", "at": "2026-03-01T10:00:00Z", "amount": 10}\n'
        '{"user": "u1", "type": "purchase", "at": "2026-03-01T11:00:00Z",'
        ' "amount": "1000000000000000000000000000"}\n',
        encoding="utf-8",
    )
    (project_dir / "events.csv").write_text(
        "user,type,at,amount\n"
        "u2,purchase,2026-03-01T10:00:00Z,1e30\n"
        "u2,purchase,2026-03-01T11:00:00Z,999999999999.99\n"
        "u2,purchase,2026-03-01T12:00:00Z,1000000000000\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["ingest", "events.jsonl", "events.csv"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "events.jsonl:2: amount '1000000000000000000000000000' is out of range "
        "(at most 999999999999.99)\n"
        "events.csv:2: amount '1e30' is out of range (at most 999999999999.99)\n"
        "events.csv:4: amount '1000000000000' is out of range (at most 999999999999.99)\n"
        "rejected rows written to events.jsonl.rejects.jsonl, events.csv.rejects.jsonl\n"
    )
    assert result.stdout.endswith("2 events stored, 0 duplicates skipped, 3 rejected\n")
    with store.connect() as connection:
        amounts = connection.execute(sa.select(events.c.amount).order_by(events.c.amount)).scalars()
        assert list(amounts) == [Decimal("10.00"), Decimal("999999999999.99")]
