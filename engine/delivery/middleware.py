"""Delivery policies as middleware: a named, ordered list, configurable in nudge.toml.

```toml
[delivery]
policies = ["consent", "rule", "send_window", "caps"]   # the default
```

The dispatcher runs every policy's `before_batch` over a sub-batch, then asks them in
this order about each action; the first that answers (skip or defer) decides, so the
order decides which reason an action gets and whether it used up a cap slot on the
way (docs/delivery.md, "Policies"). The default order is the one engine/delivery/
policy.py argues for; a shop may reorder or leave out any policy but consent, which
is the law, not a preference.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.delivery.policy import (
    ConsentPolicy,
    DeliveryPolicy,
    FrequencyCapPolicy,
    SendWindowPolicy,
)

if TYPE_CHECKING:
    from engine.delivery.config import DeliveryConfig


def _rule_policy(rules) -> DeliveryPolicy:
    # Imported on use: the rule policy pulls in rule loading and planning.
    from engine.delivery.rule_policy import RulePolicy

    return RulePolicy(rules)


# name -> build(rules): a fresh policy per claimed batch (policies keep per-batch state).
POLICIES: dict[str, Callable[..., DeliveryPolicy]] = {
    "consent": lambda rules: ConsentPolicy(),
    "rule": _rule_policy,
    "send_window": lambda rules: SendWindowPolicy(),
    "caps": lambda rules: FrequencyCapPolicy(),
}

# Consent first: a user without consent is skipped, whatever else holds. Then the rule:
# an action its rule no longer wants (`unless`, flight over, paused) must not use a cap
# slot. Then the send window, before caps: a message deferred to the morning must not
# use up today's slot either.
DEFAULT_ORDER: tuple[str, ...] = ("consent", "rule", "send_window", "caps")

REQUIRED = ("consent",)


def check_policy_names(names: Sequence[str]) -> None:
    """Raise ValueError (shown under the key `delivery.policies`) for a bad list."""
    for name in names:
        if name not in POLICIES:
            close = difflib.get_close_matches(name, list(POLICIES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(DEFAULT_ORDER)
            raise ValueError(f"unknown delivery policy {name!r}{hint}; known: {known}")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"delivery policy listed twice: {', '.join(repeated)}")
    for name in REQUIRED:
        if name not in names:
            raise ValueError(f"the {name!r} policy cannot be left out")


def build_policies(names: Sequence[str] = DEFAULT_ORDER, rules=None) -> list[DeliveryPolicy]:
    """The policies of one claimed batch, in `names` order; `rules` as RulePolicy takes
    them (a RuleSet, a callable returning one, or None to load the rule files)."""
    check_policy_names(names)
    return [POLICIES[name](rules) for name in names]


def configured_policies(config: DeliveryConfig, rules=None) -> list[DeliveryPolicy]:
    """The policies `[delivery] policies` lists, or the default order."""
    return build_policies(config.policies or DEFAULT_ORDER, rules)
