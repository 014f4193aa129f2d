"""Delivery policies by name: the `nudge.policies` entry points.

An entry point loads a factory, `factory(rules) -> policy`, called once per claimed
batch (a policy keeps per-batch state); `rules` is what engine.delivery.rule_policy
takes and most policies ignore it. The policy has a `name` equal to the entry point's,
`check(ctx, action) -> Outcome | None` and optionally `before_batch(ctx, actions)` and
`confirm(ctx, passing)` (engine.delivery.policy.DeliveryPolicy is the base class to
subclass). Nudge's own
four are entry points of its pyproject.toml, like a shop's: `[delivery] policies`
places a plugin's policy in the order by its name (docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.plugins import PluginRegistry

GROUP = "nudge.policies"


def check_policy_factory(entry_name: str, loaded: Any) -> Callable[..., Any]:
    if not callable(loaded):
        raise TypeError("a delivery policy entry point loads a factory: factory(rules) -> policy")
    return loaded


POLICY_FACTORIES: PluginRegistry[Callable[..., Any]] = PluginRegistry(
    GROUP, "delivery policy", check=check_policy_factory
)


def build_policy(name: str, rules=None):
    """A fresh policy `name` for one claimed batch, checked to be one."""
    policy = POLICY_FACTORIES[name](rules)
    if getattr(policy, "name", None) != name or not callable(getattr(policy, "check", None)):
        where = POLICY_FACTORIES.distribution(name) or "code"
        raise TypeError(
            f"delivery policy {name!r} ({where}) built {policy!r}: a policy needs "
            f"name = {name!r} and check(ctx, action)"
        )
    return policy
