"""Evaluation results as text for people (the CLI prints this; --json prints as_dict)."""

from __future__ import annotations

from engine.planning.runner import Evaluation

STATUS_TEXT = {
    "not_due": "no schedule slot due at this time",
    "paused": "paused",
    "outside_flight": "outside its flight window",
    "already_claimed": "this slot was already evaluated",
}


def render_evaluation(evaluation: Evaluation) -> str:
    verb = "dry-run" if evaluation.dry_run else "run"
    lines = [
        f"{verb} at {evaluation.at.isoformat()}"
        + (" (nothing written)" if evaluation.dry_run else "")
    ]
    if evaluation.stage_entries:
        entries = ", ".join(
            f"{stage} {count}" for stage, count in sorted(evaluation.stage_entries.items())
        )
        lines.append(f"stage entries recorded: {entries}")
    for diagnostic in evaluation.diagnostics:
        if diagnostic.severity == "error":
            lines.append(f"skipped (invalid): {diagnostic.location}: {diagnostic.message}")
    for outcome in evaluation.outcomes:
        lines.append("")
        if outcome.status != "done":
            lines.append(f"{outcome.rule_id}: {STATUS_TEXT.get(outcome.status, outcome.status)}")
            if outcome.error:
                lines.append(f"  error: {outcome.error}")
            continue
        lines.append(
            f"{outcome.rule_id}: matched {outcome.matched}, planned {outcome.planned}, "
            f"held out {outcome.held_out}"
            + (f", shadow {outcome.shadow}" if outcome.shadow else "")
            + f"  ({outcome.duration_ms} ms)"
        )
        if outcome.suppressed:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(outcome.suppressed.items()))
            lines.append(f"  suppressed: {reasons}")
        if outcome.variants:
            variants = ", ".join(f"{name} {n}" for name, n in sorted(outcome.variants.items()))
            lines.append(f"  variants: {variants}")
        if outcome.actions:
            actions = ", ".join(f"{kind} {n}" for kind, n in sorted(outcome.actions.items()))
            lines.append(f"  actions: {actions}")
        if outcome.audience_removed:
            lines.append(f"  audience members who no longer qualify: {outcome.audience_removed}")
        for sample in outcome.samples:
            label = sample["outcome"] + (f" ({sample['reason']})" if sample["reason"] else "")
            variant = f" [{sample['variant']}]" if sample["variant"] else ""
            actions = "; ".join(_action_text(a) for a in sample["actions"])
            lines.append(
                f"  {sample['user']}: {label}{variant}" + (f" -> {actions}" if actions else "")
            )
    return "\n".join(lines)


def _action_text(action: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in action["params"].items() if v is not None)
    return f"{action['kind']}({params})"
