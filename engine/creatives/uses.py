"""Which rules use which creative, with the offer of each variant (from rules/).

A CreativeUse is what the checks (checks.py), landing pages (landing.py) and previews
are given; this module is below them all.

The rule loader owns the rules; this module only asks it, lazily, so that the
creatives package works in a project with templates and no rules yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.config import Settings
from engine.errors import Location, NotFoundError

if TYPE_CHECKING:
    from engine.planning.compile import RuleSet


@dataclass(frozen=True, slots=True)
class CreativeUse:
    """One rule (and variant) using a creative, with the offer facts of that variant.

    `kind` is the action naming the creative (email, sms, webhook). `render` is False
    for a rule whose file has errors: its creative is still checked for existence and
    channel templates, but not rendered with an offer nobody validated.
    """

    rule_id: str
    creative: str
    variant: str | None
    offer: dict[str, Any] = field(default_factory=dict)
    location: Location = Location("rules")
    kind: str | None = None
    render: bool = True


def creative_uses_from_rules(settings: Settings) -> list[CreativeUse]:
    """Every (rule, variant) naming a creative; invalid rules are left to `nudge check`."""
    if not settings.rules_dir.is_dir():
        return []
    from engine.planning.compile import load_ruleset

    return creative_uses(load_ruleset(settings))


def use_of_rule(settings: Settings, rule_id: str, variant: str | None) -> CreativeUse:
    """The creative use of one rule and variant (the first variant when none is named)."""
    uses = [use for use in creative_uses_from_rules(settings) if use.rule_id == rule_id]
    if not uses:
        raise NotFoundError(f"no valid rule {rule_id!r} with a creative in {settings.rules_dir}")
    if variant is None:
        return uses[0]
    for use in uses:
        if use.variant == variant:
            return use
    known = ", ".join(sorted({str(use.variant) for use in uses}))
    raise NotFoundError(f"rule {rule_id!r} has no variant {variant!r} (variants: {known})")


def creative_uses(ruleset: RuleSet) -> list[CreativeUse]:
    """What each rule asks of its creatives: the offer per variant, located."""
    uses = []
    for rule_id, compiled in sorted(ruleset.rules.items()):
        spec = compiled.spec
        for variant, plans in spec.actions.items():
            offer = next((dict(p.params) for p in plans if p.kind == "coupon"), {})
            for plan in plans:
                creative = plan.params.get("creative")
                if creative:
                    location = compiled.rule.location_of(f"actions.{plan.kind}.creative")
                    uses.append(CreativeUse(rule_id, creative, variant, offer, location, plan.kind))
    return uses
