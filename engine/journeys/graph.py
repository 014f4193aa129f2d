"""Rules linked by `after:` triggers, as trees: the shop's multi-step journeys.

A sequence (thank-you, then three days later a cross-sell unless they bought again)
is written as chained rules, each naming the one it follows. Every rule follows at
most one other, so the rules form trees hanging from rules with their own trigger
(stage, event, schedule), except where rules follow each other in a loop: the loader
allows `a` after `b` and `b` after `a` (only a rule following itself is an error), so
loops are found here, reported, and drawn once with a "back to" mark, never walked
around.

Exclusive groups are the other link between rules (at most one rule of a group acts
on a user per run, the highest priority first); each step names its group and the
groups are listed with their rules in the order they win.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from engine.durations import format_duration
from engine.rules.models import Rule


@dataclass(frozen=True)
class Step:
    """One rule as a journey shows it."""

    rule_id: str
    status: str
    description: str
    trigger: str  # "stage: first_purchase", "after: first-purchase-thank-you"
    follows: str | None  # the rule id of an `after` trigger
    wait: str | None  # "3d": how long after the followed rule acted
    unless: tuple[str, ...]  # exit conditions: any of them stops the step
    exclusive_group: str | None
    priority: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "status": self.status,
            "description": self.description,
            "trigger": self.trigger,
            "after": self.follows,
            "wait": self.wait,
            "unless": list(self.unless),
            "exclusive_group": self.exclusive_group,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Node:
    """A step and the steps that follow it; `back_to` marks the end of a loop."""

    step: Step
    follow_ups: tuple[Node, ...] = ()
    back_to: str | None = None  # set on the last step of a loop: the rule it follows

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.step.rule_id,
            "wait": self.step.wait,
            "back_to": self.back_to,
            "follow_ups": [node.as_dict() for node in self.follow_ups],
        }

    def size(self) -> int:
        return 1 + sum(node.size() for node in self.follow_ups)


@dataclass
class JourneyMap:
    """Every valid rule, as trees of follow-ups, plus groups, loops and skipped rules."""

    steps: dict[str, Step] = field(default_factory=dict)
    trees: list[Node] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)  # highest priority first
    cycles: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # invalid rules: see `nudge check`

    @property
    def journeys(self) -> list[Node]:
        """The trees with at least one follow-up: the multi-step sequences."""
        return [tree for tree in self.trees if tree.follow_ups]

    @property
    def single_steps(self) -> list[Node]:
        return [tree for tree in self.trees if not tree.follow_ups]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": [step.as_dict() for step in self.steps.values()],
            "journeys": [tree.as_dict() for tree in self.journeys],
            "single_steps": [tree.step.rule_id for tree in self.single_steps],
            "exclusive_groups": self.groups,
            "cycles": self.cycles,
            "skipped": self.skipped,
        }


def step_of(rule: Rule) -> Step:
    trigger = rule.trigger
    return Step(
        rule_id=rule.id,
        status=rule.status,
        description=rule.description,
        trigger=f"{trigger.kind}: {trigger.value}"
        + (f" where {trigger.where}" if trigger.where is not None else ""),
        follows=trigger.after,
        wait=format_duration(trigger.wait) if trigger.wait is not None else None,
        unless=tuple(str(condition) for condition in rule.unless),
        exclusive_group=rule.exclusive_group,
        priority=rule.priority,
    )


def build_journeys(rules: dict[str, Rule], skipped: list[str] | tuple[str, ...] = ()) -> JourneyMap:
    """The journey map of `rules` (valid rules by id); `skipped` names invalid ones."""
    steps = {rule_id: step_of(rules[rule_id]) for rule_id in sorted(rules)}
    followers: dict[str, list[str]] = defaultdict(list)
    for step in steps.values():
        if step.follows is not None:
            followers[step.follows].append(step.rule_id)
    for ids in followers.values():
        # Sooner steps first: a 12h SMS before a 1d email, as the shopper sees them.
        ids.sort(key=lambda rule_id: (rules[rule_id].trigger.wait, rule_id))

    def tree(rule_id: str, path: tuple[str, ...]) -> Node:
        children = []
        back_to = None
        for follower in followers.get(rule_id, ()):
            if follower in path or follower == rule_id:
                back_to = follower  # the loop closes here: say so, do not walk on
            else:
                children.append(tree(follower, (*path, rule_id)))
        return Node(steps[rule_id], tuple(children), back_to)

    # A rule with its own trigger starts a tree, and so does one following an invalid
    # rule (it is valid itself, but nothing it follows will ever act).
    roots = [
        rule_id
        for rule_id, step in steps.items()
        if step.follows is None or step.follows not in steps
    ]
    trees = [tree(rule_id, ()) for rule_id in roots]
    placed = {rule_id for node in trees for rule_id in _ids(node)}
    cycles = _cycles(steps, placed)
    for cycle in cycles:
        # Drawn from the loop's first rule; the rule before it in the loop is its parent,
        # so the walk ends there with a "back to" mark.
        trees.append(tree(cycle[0], ()))
    return JourneyMap(
        steps=steps,
        trees=trees,
        groups=_groups(steps),
        cycles=cycles,
        skipped=sorted(skipped),
    )


def _ids(node: Node) -> list[str]:
    return [node.step.rule_id, *(rule_id for child in node.follow_ups for rule_id in _ids(child))]


def _cycles(steps: dict[str, Step], placed: set[str]) -> list[list[str]]:
    """Each loop of `after` links once, from its smallest id, in the order rules run
    (["a", "b"]: b follows a, a follows b). Rules not placed in a tree from a root all
    lead into a loop: each has one rule it follows, and following those never ends."""
    cycles: list[list[str]] = []
    seen: set[str] = set(placed)
    for start in steps:
        if start in seen:
            continue
        walk: list[str] = []
        current: str | None = start
        while current is not None and current not in seen and current not in walk:
            walk.append(current)
            current = steps[current].follows
        if current is not None and current in walk:
            loop = walk[walk.index(current) :]
            # `follows` points backwards in time: reverse to read in running order.
            loop.reverse()
            first = loop.index(min(loop))
            cycles.append(loop[first:] + loop[:first])
        seen.update(walk)
    return sorted(cycles)


def _groups(steps: dict[str, Step]) -> dict[str, list[str]]:
    groups: dict[str, list[Step]] = defaultdict(list)
    for step in steps.values():
        if step.exclusive_group is not None:
            groups[step.exclusive_group].append(step)
    return {
        name: [step.rule_id for step in sorted(members, key=lambda s: (-s.priority, s.rule_id))]
        for name, members in sorted(groups.items())
    }
