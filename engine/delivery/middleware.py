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
is the law, not a preference. A plugin adds a policy under its own name through the
`nudge.policies` entry points (engine/delivery/policy_kinds.py, docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.delivery.config import DEFAULT_ORDER, check_policy_names
from engine.delivery.policy import (
    ConsentPolicy,
    DeliveryPolicy,
    FrequencyCapPolicy,
    SendWindowPolicy,
)
from engine.delivery.policy_kinds import build_policy

if TYPE_CHECKING:
    from engine.delivery.config import DeliveryConfig


# The factories of Nudge's own policies, registered as `nudge.policies` entry points in
# pyproject.toml exactly like a plugin's (engine/delivery/policy_kinds.py). The names,
# their default order and the check of a configured list are in engine/delivery/
# config.py, which validates nudge.toml.
def consent(rules) -> DeliveryPolicy:
    return ConsentPolicy()


def rule(rules) -> DeliveryPolicy:
    # Imported on use: the rule policy pulls in rule loading and planning.
    from engine.delivery.rule_policy import RulePolicy

    return RulePolicy(rules)


def send_window(rules) -> DeliveryPolicy:
    return SendWindowPolicy()


def caps(rules) -> DeliveryPolicy:
    return FrequencyCapPolicy()


def build_policies(names: Sequence[str] = DEFAULT_ORDER, rules=None) -> list[DeliveryPolicy]:
    """The policies of one claimed batch, in `names` order; `rules` as RulePolicy takes
    them (a RuleSet, a callable returning one, or None to load the rule files)."""
    check_policy_names(names)
    return [build_policy(name, rules) for name in names]


def configured_policies(config: DeliveryConfig, rules=None) -> list[DeliveryPolicy]:
    """The policies `[delivery] policies` lists, or the default order."""
    return build_policies(config.policies or DEFAULT_ORDER, rules)


def default_policies(rules=None) -> list[DeliveryPolicy]:
    """The policies of one claimed batch in the default order (DEFAULT_ORDER);
    `rules` as RulePolicy takes them (a RuleSet, a callable returning one, or None to
    load the rule files)."""
    return build_policies(DEFAULT_ORDER, rules)
