"""Which ad platforms an audience may go to, by the rules that add users to it.

A rule's `audience: {name: vip, platforms: [meta]}` says its users go to Meta only:
exporting the audience for Google would hand Google users the rule never meant for it.
An export for a platform is refused when every rule naming the audience lists its
platforms and none lists that one; `csv` is the shop's own file and always allowed.
"""

from __future__ import annotations

from engine.config import Settings

ANY = None  # a rule without `platforms`: every platform configured in nudge.toml


def audience_platforms(settings: Settings, audience: str) -> dict[str, tuple[str, ...] | None]:
    """rule id -> the platforms its audience action names (None: any), for `audience`."""
    from engine.planning.compile import load_ruleset

    found: dict[str, tuple[str, ...] | None] = {}
    for rule_id, rule in load_ruleset(settings).rules.items():
        for plans in rule.spec.actions.values():
            for plan in plans:
                if plan.kind != "audience" or plan.params.get("name") != audience:
                    continue
                listed = plan.params.get("platforms")
                previous = found.get(rule_id, ())
                if listed is None or previous is None:
                    found[rule_id] = ANY
                else:
                    found[rule_id] = tuple(sorted({*previous, *listed}))
    return found


def refusal(
    audience: str, platform: str, targeted: dict[str, tuple[str, ...] | None]
) -> str | None:
    """Why `audience` must not go to `platform`, or None when it may."""
    if platform == "csv" or not targeted:  # no rule names it (any more): nothing to go by
        return None
    if any(platforms is ANY or platform in platforms for platforms in targeted.values()):
        return None
    rules = ", ".join(
        f"rules/{rule_id}.yaml ({', '.join(platforms or ())})"
        for rule_id, platforms in sorted(targeted.items())
    )
    return (
        f"audience {audience!r} is not for {platform}: the rules that add to it target only "
        f"other platforms: {rules}"
    )
