"""One broken segment stops only the rules that use it (DESIGN invariant 6)."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.planning.compile import load_ruleset
from tests.planning.helpers import write_rule

T = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def test_a_broken_segment_spares_the_rules_using_healthy_ones(settings):
    (settings.rules_dir).mkdir(parents=True, exist_ok=True)
    (settings.rules_dir / "segments.yaml").write_text(
        "loyal: purchase_count >= 3\n"
        "typo: total_spnt >= 100\n"
        'vip_loyal: in_segment("loyal") and in_segment("typo")\n',
        encoding="utf-8",
    )
    write_rule(
        settings,
        "loyal-thanks",
        'trigger: {stage: repeat_buyer}\nwhen: in_segment("loyal")\nactions:\n  tag: {add: [x]}\n',
    )
    write_rule(
        settings,
        "typo-user",
        'trigger: {stage: repeat_buyer}\nwhen: in_segment("typo")\nactions:\n  tag: {add: [y]}\n',
    )

    ruleset = load_ruleset(settings)

    assert sorted(ruleset.rules) == ["loyal-thanks"]
    assert "typo-user" in ruleset.broken
    errors = sorted(d.render() for d in ruleset.errors)
    assert any("unknown field 'total_spnt'" in e for e in errors), errors
