"""The journey map as a tree for the terminal (`nudge journeys`).

    first-purchase-thank-you [active] stage: first_purchase
    └─ after 3d ─ cross-sell-after-first-purchase [active]
         unless: count("purchase", since="trigger") >= 1

No colour, so it reads the same in a pipe, a log and a test.
"""

from __future__ import annotations

from engine.journeys.graph import JourneyMap, Node, Step


def render_text(journeys: JourneyMap) -> str:
    lines: list[str] = []
    if journeys.journeys:
        lines.append("Journeys (rules linked by `after:`)")
        for tree in journeys.journeys:
            lines += _tree(tree, prefix="  ", connector="", child_prefix="  ")
    if journeys.single_steps:
        if lines:
            lines.append("")
        lines.append("Single-step rules")
        for tree in journeys.single_steps:
            lines += _tree(tree, prefix="  ", connector="", child_prefix="  ")
    if journeys.groups:
        lines += ["", "Exclusive groups (at most one rule acts per user and run; first wins)"]
        for name, members in journeys.groups.items():
            ranked = ", ".join(
                f"{rule_id} ({journeys.steps[rule_id].priority})" for rule_id in members
            )
            lines.append(f"  {name}: {ranked}")
    if journeys.cycles:
        lines += ["", "Cycles (rules that follow each other in a loop)"]
        for cycle in journeys.cycles:
            lines.append("  " + " -> ".join([*cycle, cycle[0]]))
    if journeys.skipped:
        lines += ["", "Skipped: invalid rules, see `nudge check`"]
        lines += [f"  {rule_id}" for rule_id in journeys.skipped]
    if not lines:
        lines.append("No rules.")
    return "\n".join(lines) + "\n"


def step_line(step: Step) -> str:
    """`id [status] trigger [group name, priority n]`; a follow-up's `after` is on its edge."""
    parts = [step.rule_id, f"[{step.status}]"]
    if step.follows is None:
        parts.append(step.trigger)
    if step.exclusive_group is not None:
        parts.append(f"[group {step.exclusive_group}, priority {step.priority}]")
    return " ".join(parts)


def _tree(node: Node, *, prefix: str, connector: str, child_prefix: str) -> list[str]:
    step = node.step
    edge = f"after {step.wait}: " if connector and step.wait else ""
    head = f"{prefix}{connector}{edge}{step_line(step)}"
    if not connector and step.follows is not None:
        head += f" (after {step.follows}, wait {step.wait})"
    lines = [head]
    detail = child_prefix + ("│  " if node.follow_ups else "   ")
    if step.unless:
        lines.append(f"{detail}unless: {' or '.join(_grouped(step.unless))}")
    if node.back_to is not None:
        lines.append(f"{detail}then back to {node.back_to}: a cycle, not followed further")
    for index, child in enumerate(node.follow_ups):
        last = index == len(node.follow_ups) - 1
        lines += _tree(
            child,
            prefix=child_prefix,
            connector="└─ " if last else "├─ ",
            child_prefix=child_prefix + ("   " if last else "│  "),
        )
    return lines


def _grouped(conditions: tuple[str, ...]) -> list[str]:
    """One condition as written; several in parentheses, since any of them stops."""
    if len(conditions) == 1:
        return list(conditions)
    return [f"({condition})" for condition in conditions]
