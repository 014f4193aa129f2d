"""Which rules use which creative, with the offer of each variant (from rules/).

The rule loader owns the rules; this module only asks it, lazily, so that the
creatives package works in a project with templates and no rules yet.
"""

from __future__ import annotations

from engine.config import Settings
from engine.creatives.checks import CreativeUse
from engine.errors import NotFoundError


def creative_uses_from_rules(settings: Settings) -> list[CreativeUse]:
    """Every (rule, variant) naming a creative; invalid rules are left to `nudge check`."""
    if not settings.rules_dir.is_dir():
        return []
    from engine.checking.check import creative_uses
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
