"""A rules folder: good files load, bad ones are reported and skipped (invariant 6)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from rules_loader_helpers import VALID, write

from engine.errors import Location
from engine.rules import load_rules

WINBACK = """\
# yaml-language-server: $schema=../rule.schema.json
id: winback-lapsed-members
description: Win back gold/silver members with no purchase for 60 days.
owner: crm-team
status: shadow
trigger:
  stage: lapsed_member
when:
  - member_tier in ["gold", "silver"]
  - total_spent >= 200
unless: purchased_since_trigger
once: per_user
flight: {start: 2026-11-01, end: 2026-11-30}
priority: 50
exclusive_group: winback
send_window: {between: ["09:00", "21:00"]}
caps: {per_user: {max: 1, per: 30d}}
experiment:
  holdout: 10%
  variants:
    standard: {weight: 1}
    bigger-coupon: {weight: 2, coupon: {value: 30}}
actions:
  coupon: {value: 20, currency: CNY, min_order: 100, expires_in: 14d}
  email: {creative: winback}
  audience: {name: lapsed-high-value}
"""


def test_the_design_example_loads_with_every_field(tmp_path):
    write(tmp_path, "winback-lapsed-members.yaml", WINBACK)
    result = load_rules(tmp_path)
    assert result.diagnostics == []
    rule = result.rules["winback-lapsed-members"]
    assert (rule.id, rule.owner, rule.status, rule.priority) == (
        "winback-lapsed-members",
        "crm-team",
        "shadow",
        50,
    )
    assert (rule.trigger.kind, rule.trigger.value) == ("stage", "lapsed_member")
    assert [c.text for c in rule.when] == [
        'member_tier in ["gold", "silver"]',
        "total_spent >= 200",
    ]
    assert [c.text for c in rule.unless] == ["purchased_since_trigger"]
    assert rule.once == "per_user" and rule.every is None
    assert (rule.flight.start, rule.flight.end) == (date(2026, 11, 1), date(2026, 11, 30))
    shanghai = ZoneInfo("Asia/Shanghai")
    assert rule.flight.bounds(shanghai) == (
        datetime(2026, 11, 1, tzinfo=shanghai),
        datetime(2026, 12, 1, tzinfo=shanghai),
    )
    assert rule.send_window.between == ("09:00", "21:00")
    assert (rule.caps.per_user.max, rule.caps.per_user.per) == (1, timedelta(days=30))
    assert rule.experiment.holdout == 0.1
    assert {n: v.weight for n, v in rule.experiment.variants.items()} == {
        "standard": 1,
        "bigger-coupon": 2,
    }
    assert rule.actions["coupon"].value == Decimal("20")
    assert rule.actions_for("standard")["coupon"].value == Decimal("20")
    assert rule.actions_for("bigger-coupon")["coupon"].value == Decimal("30")
    assert rule.actions_for("bigger-coupon")["coupon"].min_order == Decimal("100")
    assert rule.actions_for("bigger-coupon")["email"].creative == "winback"
    assert rule.actions_for(None) == rule.actions
    path = str(tmp_path / "winback-lapsed-members.yaml")
    assert rule.location_of("actions.coupon.value") == Location(path, 24, 19)
    assert rule.location_of("when.1") == Location(path, 10, 5)
    assert rule.location_of("trigger", key=True) == Location(path, 6, 1)
    # A default value (not in the file) is shown at its nearest written parent key.
    assert rule.location_of("actions.coupon.length") == Location(path, 24, 3)
    assert rule.when[1].location == Location(path, 10, 5)
    import hashlib

    assert rule.content_hash == hashlib.sha256(WINBACK.encode()).hexdigest()
    assert rule.source == tmp_path / "winback-lapsed-members.yaml"
    assert rule.diagnostic("priority", "tied", severity="warning").render() == (
        f"{path}:14:11: warning: tied\n    priority: 50                  \n              ^"
    ).replace("50                  \n", "50\n")


def test_event_trigger_with_where_and_after_trigger(tmp_path):
    write(
        tmp_path,
        "big-order.yaml",
        """\
        trigger:
          event: purchase
          where: event.amount >= 500
        every: 7d
        flight: {start: 2026-11-01T00:00:00+08:00, end: 2026-11-02}
        actions: {tag: {add: [big-spender]}}
        """,
    )
    write(
        tmp_path,
        "thanks-big.yaml",
        """\
        trigger: {after: big-order, wait: 1d12h}
        actions: {email: {creative: thanks}}
        """,
    )
    result = load_rules(tmp_path)
    assert result.diagnostics == []
    big, thanks = result.rules["big-order"], result.rules["thanks-big"]
    assert (big.trigger.kind, big.trigger.where.text, big.every) == (
        "event",
        "event.amount >= 500",
        timedelta(days=7),
    )
    assert big.flight.bounds(ZoneInfo("UTC")) == (
        datetime(2026, 10, 31, 16, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=ZoneInfo("UTC")),
    )
    assert (thanks.trigger.kind, thanks.trigger.value, thanks.trigger.wait) == (
        "after",
        "big-order",
        timedelta(days=1, hours=12),
    )


def test_broken_files_are_reported_and_good_ones_load(tmp_path):
    write(tmp_path, "good-one.yaml", VALID)
    write(tmp_path, "good-two.yml", VALID.replace("lapsed_member", "vip"))
    write(tmp_path, "bad-stage.yaml", VALID.replace("lapsed_member", "lapsed_membr"))
    write(tmp_path, "bad-yaml.yaml", "trigger: [\n")
    write(
        tmp_path,
        "follows-nobody.yaml",
        VALID.replace("stage: lapsed_member", "after: good-on\n  wait: 1d"),
    )
    write(tmp_path, "segments.yaml", "big: total_spent > 1000\nBad Name: x\n")
    (tmp_path / "tests").mkdir()
    write(tmp_path / "tests", "good-one.yaml", "now: 2026-11-11T10:00:00+08:00\ntests: []\n")
    write(tmp_path, "notes.txt", "not a rule")
    result = load_rules(tmp_path)
    assert sorted(result.rules) == ["good-one", "good-two"]
    assert sorted(result.broken) == ["bad-stage", "bad-yaml", "follows-nobody", "segments.yaml"]
    assert [d.render().replace(f"{tmp_path}/", "").split("\n")[0] for d in result.diagnostics] == [
        "bad-stage.yaml:2:10: error: unknown stage 'lapsed_membr' (did you mean 'lapsed_member'?)",
        "bad-yaml.yaml:2:1: error: invalid YAML: expected the node content, but found "
        "'<stream end>'",
        "follows-nobody.yaml:2:10: error: 'after' names no rule 'good-on' (did you mean "
        "'good-one'?)",
        "segments.yaml:2:1: error: segment name 'Bad Name' must be lowercase letters and digits "
        "joined by '-' or '_'",
    ]
    assert list(result.segments) == ["big"]
    assert result.segments["big"].offset_location(6) == Location(
        str(tmp_path / "segments.yaml"), 1, 12
    )
    assert not result.ok


def test_same_id_in_yaml_and_yml_is_an_error(tmp_path):
    write(tmp_path, "twice.yaml", VALID)
    write(tmp_path, "twice.yml", VALID)
    result = load_rules(tmp_path)
    assert list(result.rules) == ["twice"]
    assert [d.message for d in result.diagnostics] == [
        "two files define rule 'twice'; keep one of .yaml / .yml"
    ]


def test_a_missing_folder_loads_nothing(tmp_path):
    result = load_rules(tmp_path / "absent")
    assert (result.rules, result.diagnostics, result.segments) == ({}, [], {})
    assert result.ok


def test_not_utf8_is_located(tmp_path):
    (tmp_path / "latin.yaml").write_bytes(b"trigger: {stage: vip}\ndescription: caf\xe9\n")
    result = load_rules(tmp_path)
    assert [d.render() for d in result.diagnostics] == [
        f"{tmp_path}/latin.yaml:2:1: error: the file is not UTF-8 text; save it as UTF-8"
    ]
