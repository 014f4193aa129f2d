"""`nudge check` tells the whole truth: every problem in one pass, rules that cannot be
delivered, event types nothing sends, and the README's example rule checks clean."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests.conftest import make_settings
from tests.planning.helpers import ingest, write_rule

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
SHOP = {"name": "Test Shop", "timezone": "Asia/Shanghai", "currency": "CNY"}
runner = CliRunner()
HEAD = re.compile(r"^\S+?(?::\d+)*: (?:error|warning): .*$", re.MULTILINE)


@pytest.fixture
def offline(project_dir, monkeypatch):
    """A project with the shipped templates and no database at all."""
    settings = make_settings(project_dir, shop=SHOP)
    shutil.copytree(REPO / "templates", settings.templates_dir)
    settings.rules_dir.mkdir()
    monkeypatch.chdir(project_dir)
    return settings


def check(*args: str) -> tuple[int, list[str], str]:
    """Exit code, the `file:line:col: severity: message` lines, and the summary line."""
    result = runner.invoke(app, ["check", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, HEAD.findall(result.output), result.output.rstrip().splitlines()[-1]


# ---------------------------------------------------------------- every problem at once

SEVERAL_ERRORS = """\
trigger: {stage: repeat_buyer}
when:
  - member_teir in ["gold", "platinum"]
  - count("purchase", within="90x") >= 2
unless: total_spnt > 5000 or member_tier == 3
once: per_usr
actions:
  coupon: {value: 15, currency: CNY, min_order: 99, expires_in: 7d}
  emial: {creative: thank-you}
"""


def test_every_error_of_a_rule_file_is_reported_in_one_pass(offline):
    write_rule(offline, "repeat", SEVERAL_ERRORS)

    code, lines, summary = check("--no-store")

    rule = Path("rules") / "repeat.yaml"
    assert code == 1
    assert lines == [
        f"{rule}:3:5: error: unknown field 'member_teir' (did you mean 'member_tier'?)",
        f"{rule}:4:30: error: invalid duration '90x': use a number and a unit w, d, h, m or s "
        "(for example '14d', '12h', '30m', '2w' or '1d12h')",
        f"{rule}:5:9: error: unknown field 'total_spnt' (did you mean 'total_spent'?)",
        f"{rule}:5:30: error: cannot compare member_tier (a string) with 3 (a number)",
        f"{rule}:6:7: error: once must be one of 'per_user' or 'per_occurrence', not 'per_usr' "
        "(did you mean 'per_user'?)",
        f"{rule}:9:3: error: unknown action kind 'emial' (did you mean 'email'?)",
    ]
    assert summary == "0 rules valid, 6 errors, 0 warnings"


def test_a_broken_rule_is_still_checked_against_its_creative_and_followed_rule(offline):
    write_rule(
        offline,
        "vip-mail",
        "trigger: {after: vip-welcom, wait: 3d}\npriorty: 5\nactions:\n  email: {creative: vip}\n",
    )

    code, lines, _ = check("--no-store")

    rule = Path("rules") / "vip-mail.yaml"
    assert code == 1
    assert lines[0] == f"{rule}:1:18: error: 'after' names no rule 'vip-welcom'"
    assert lines[1] == f"{rule}:2:1: error: unknown key 'priorty' (did you mean 'priority'?)"
    assert lines[2].startswith(
        f"{rule}:4:21: error: rule 'vip-mail': creative 'vip' cannot be sent by email"
    )
    assert len(lines) == 3


def test_every_segment_error_is_reported_and_none_cascades(offline):
    (offline.rules_dir / "segments.yaml").write_text(
        "high-value: total_spnt >= 1000\n"
        'gold: member_teir == "gold"\n'
        'loyal: in_segment("gold") and purchase_count >= "3"\n',
        encoding="utf-8",
    )
    write_rule(
        offline,
        "big-spenders",
        'trigger: {stage: vip}\nwhen: in_segment("loyal") and total_spent > "x"\n'
        "actions:\n  tag: {add: [big]}\n",
    )

    code, lines, summary = check("--no-store")

    segments, rule = Path("rules") / "segments.yaml", Path("rules") / "big-spenders.yaml"
    assert code == 1
    assert lines == [
        f"{rule}:2:7: error: rule 'big-spenders' is skipped until {segments} has no errors: "
        "it uses segment 'loyal', which has an error",
        f'{rule}:2:31: error: cannot compare total_spent (a number) with "x" (a string)',
        f"{segments}:1:13: error: unknown field 'total_spnt' (did you mean 'total_spent'?)",
        f"{segments}:2:7: error: unknown field 'member_teir' (did you mean 'member_tier'?)",
        f'{segments}:3:31: error: cannot compare purchase_count (a number) with "3" '
        "(a string): remove the quotes around the number",
    ]
    assert summary == "0 rules valid, 5 errors, 0 warnings"


# ---------------------------------------------------------------- rules that cannot be delivered


def test_an_email_with_an_ad_only_creative_is_an_error_at_its_creative_key(offline):
    write_rule(
        offline,
        "vip-thanks",
        "trigger: {stage: vip}\n"
        "actions:\n"
        "  coupon: {percent_off: 15, expires_in: 7d}\n"
        "  email: {creative: vip}\n"
        "  sms: {creative: thank-you}\n",
    )

    code, lines, summary = check("--no-store")

    assert code == 1
    assert lines == [
        f"{Path('rules') / 'vip-thanks.yaml'}:4:21: error: rule 'vip-thanks': creative 'vip' "
        "cannot be sent by email: it has no email_subject.<locale>.txt, email.<locale>.txt, "
        "email.<locale>.html for locale en, zh-CN (it has: landing, ads; creatives with an "
        "email: cross-sell, double-eleven, thank-you, welcome, winback)"
    ]
    assert summary == "1 rule valid, 1 error, 0 warnings"


# ---------------------------------------------------------------- event types nothing sends


@pytest.fixture
def shop(settings, store_url, monkeypatch):
    """A project on the parametrised store that knows one event type not ingested yet."""
    settings = make_settings(
        settings.project_dir,
        shop=SHOP,
        database={"url": store_url},
        events={"known": ["wishlist_add"]},
    )
    monkeypatch.chdir(settings.project_dir)
    return settings


def test_an_event_type_nothing_sends_is_a_warning_with_a_did_you_mean(shop, store, tmp_path):
    ingest(
        store,
        tmp_path,
        now=T,
        users=[{"id": "u1"}],
        events=[
            {"user": "u1", "type": kind, "at": (T - timedelta(days=1)).isoformat(), **extra}
            for kind, extra in (
                ("purchase", {"amount": 99}),
                ("visit", {}),
                ("refund", {"amount": 9}),
            )
        ],
    )
    write_rule(shop, "typo", "trigger: {event: purchse}\nactions:\n  tag: {add: [buyer]}\n")
    write_rule(
        shop,
        "counted",
        "trigger: {stage: vip}\n"
        'when: count("vist", within="7d") >= 1 and sum("refnd.amount") < 10\n'
        'unless: count("wishlist_add") >= 1 or count("purchase") > 9\n'
        "actions:\n  tag: {add: [x]}\n",
    )

    code, lines, summary = check()

    counted, typo = Path("rules") / "counted.yaml", Path("rules") / "typo.yaml"
    unknown = "no ingested event has type {!r}, and nudge.toml [events] known does not list it"
    assert code == 0
    assert [line for line in lines if "matches nobody" not in line] == [
        f"{counted}:2:13: warning: {unknown.format('vist')} (did you mean 'visit'?)",
        f"{counted}:2:47: warning: {unknown.format('refnd')} (did you mean 'refund'?)",
        f"{typo}:1:18: warning: {unknown.format('purchse')} (did you mean 'purchase'?)",
    ]
    assert summary.endswith(" 0 errors, 4 warnings")  # and 'counted' matches nobody


def test_event_types_are_not_checked_without_a_database(offline):
    write_rule(offline, "typo", "trigger: {event: purchse}\nactions:\n  tag: {add: [buyer]}\n")

    code, lines, summary = check()

    assert (code, lines, summary) == (0, [], "1 rule valid, 0 errors, 0 warnings")
    assert not (offline.project_dir / "nudge.db").exists()  # check created no database


def test_a_new_project_checks_clean_and_knows_the_usual_event_types(tmp_path, monkeypatch):
    folder = tmp_path / "new-shop"
    assert runner.invoke(app, ["init", str(folder)]).exit_code == 0
    assert "[events]" in (folder / "nudge.toml").read_text(encoding="utf-8")
    monkeypatch.chdir(folder)

    code, lines, summary = check()
    assert code == 0 and [line for line in lines if ": error: " in line] == []
    assert not [line for line in lines if "no ingested event" in line]

    write_rule_text = "trigger: {event: purchse}\nactions:\n  tag: {add: [buyer]}\n"
    (folder / "rules" / "typo.yaml").write_text(write_rule_text, encoding="utf-8")
    _, lines, _ = check()
    assert any(
        line.startswith(
            f"{Path('rules') / 'typo.yaml'}:1:18: warning: no ingested event has type 'purchse'"
        )
        and line.endswith("(did you mean 'purchase'?)")
        for line in lines
    ), lines


# ---------------------------------------------------------------- the README's example rule


def readme_rule() -> tuple[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Create\n`rules/([a-z0-9-]+)\.yaml`:\n\n```yaml\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its 'Write a rule' example"
    return match[1], match[2]


def test_the_readme_example_rule_checks_clean_with_the_shipped_creatives(offline):
    rule_id, text = readme_rule()
    write_rule(offline, rule_id, text)

    code, lines, summary = check("--no-store")

    assert (code, lines, summary) == (0, [], "1 rule valid, 0 errors, 0 warnings")
    # Its creative fits it: an email stating its coupon, and no word a repeat buyer
    # would find wrong.
    creative = re.search(r"email: \{creative: ([a-z0-9-]+)\}", text)[1]
    out = offline.project_dir / "preview"
    for locale in ("en", "zh-CN"):
        result = runner.invoke(
            app, ["preview", creative, "--rule", rule_id, "--locale", locale, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        email = (out / "email.txt").read_text(encoding="utf-8")
        subject = (out / "email_subject.txt").read_text(encoding="utf-8")
        assert ("CN¥15 off orders over CN¥99" if locale == "en" else "满¥99减¥15") in email
        assert "first order" not in subject + email and "第一单" not in subject + email
    # The misspelling the README shows is reported exactly as the README says.
    write_rule(offline, rule_id, text.replace("member_tier in", "member_teir in"))
    result = runner.invoke(app, ["check", "--no-store"])
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "\n".join(result.output.split("\n")[:3]) + "\n" in readme
