"""Issue 14 item 5: --version, coupons to stdout, audience platforms, 0 rows, quiet
daemon, natural stage entries, SMS parts."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

from cli_shop import FROZEN, run, shop_fixtures

from engine.daemon_log import DaemonLog
from engine.planning.runner import Evaluation
from engine.presentation.output import plural
from engine.users import natural_entries

shop, in_shop = shop_fixtures()


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("nudge ")


def test_plurals():
    assert [plural(1, "error"), plural(2, "error"), plural(0, "row")] == [
        "1 error",
        "2 errors",
        "0 rows",
    ]
    assert plural(3, "stage entry") == "3 stage entries"


def test_coupons_export_out_dash_writes_to_stdout(in_shop):
    result = run("coupons", "export", "--out", "-")
    assert result.exit_code == 0
    assert result.stdout.startswith("code,user_id,rule_id,")
    assert not (in_shop / "-").exists()


def test_google_export_of_a_meta_only_audience_is_refused(in_shop):
    rule = in_shop / "rules" / "vip-retargeting.yaml"
    original = rule.read_text(encoding="utf-8")
    rule.write_text(
        original.replace("{name: vip-retargeting}", "{name: vip-retargeting, platforms: [meta]}")
    )
    try:
        result = run("audiences", "export", "vip-retargeting", "--format", "google")
        synced = run("audiences", "sync", "vip-retargeting", "--platform", "google")
    finally:
        rule.write_text(original, encoding="utf-8")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: audience 'vip-retargeting' is not for google: the rules that add to it "
        "target only other platforms: rules/vip-retargeting.yaml (meta)\n"
    )
    assert synced.exit_code == 1
    assert "Warning: skipped google: audience 'vip-retargeting' is not for google" in (
        synced.stderr
    )


def test_an_empty_file_and_a_header_only_csv_warn_of_0_rows(in_shop):
    (in_shop / "empty.jsonl").write_text("")
    (in_shop / "header.csv").write_text("id,email\n")
    result = run("ingest", "empty.jsonl", "header.csv")
    assert result.exit_code == 0, result.output
    assert "Warning: empty.jsonl: 0 rows" in result.stderr
    assert "Warning: header.csv: 0 rows" in result.stderr
    assert result.stdout.startswith("0 rows read from 2 files:")


def test_the_daemon_logs_nothing_on_idle_ticks():
    stream = io.StringIO()
    log = DaemonLog("text", stream)
    log.tick(Evaluation(at=FROZEN, dry_run=False), reason="timer")
    assert stream.getvalue() == ""


def test_run_once_ends_with_a_summary_line_in_shop_time(in_shop):
    result = run("run", "--once")
    assert result.exit_code == 0, result.output
    last = result.stdout.splitlines()[-1]
    assert last.startswith("2026-11-20T10:00:00+08:00 run --once: planned ")


def test_users_show_dates_a_repeat_buyer_by_the_second_purchase():
    def at(day):
        return datetime(2026, 3, day, tzinfo=UTC)

    loaded = at(20)
    history = [
        {
            "stage": "first_purchase",
            "entered_at": at(1),
            "exited_at": loaded,
            "recorded_at": loaded,
        },
        {"stage": "repeat_buyer", "entered_at": loaded, "exited_at": None, "recorded_at": loaded},
    ]
    money = [(at(1), "purchase", Decimal(10)), (at(5), "purchase", Decimal(20))]
    shown = natural_entries(history, money, vip_total_spent=5000)
    assert [row["entered_at"] for row in shown] == [at(1), at(5)]
    assert shown[1]["recorded_at"] == loaded


def test_users_show_command_uses_the_natural_entry(in_shop):
    result = run("users", "show", "u00001", "--json")
    assert result.exit_code == 0


def test_preview_warns_when_the_sms_takes_several_parts(in_shop):
    folder = in_shop / "templates" / "long-sms"
    folder.mkdir()
    sms = "【{{ shop.name }}】" + "双十一" * 40 + " {{ blocks.unsubscribe_sms() }}\n"
    (folder / "sms.zh-CN.txt").write_text(sms, encoding="utf-8")
    result = run("preview", "long-sms", "--surface", "sms", "--locale", "zh-CN", "--out", "p")
    assert "Warning: " in result.stderr, result.output
    assert "the SMS takes 2 parts (UCS-2" in result.stderr
