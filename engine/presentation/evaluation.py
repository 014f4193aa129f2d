"""A rule evaluation (`nudge dry-run`, `nudge fire`) as text for people.

The header names the instant in shop time; a dry-run says what it would have recorded
and ends with one summary line that says nothing was written, after everything it
describes (never "nothing written" above "stage entries recorded").
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from engine.presentation.output import counts_text, plural
from engine.presentation.times import local_time

STATUS_TEXT = {
    "not_due": "no schedule slot due at this time",
    "paused": "paused",
    "outside_flight": "outside its flight window",
    "already_claimed": "this slot was already evaluated",
}


def render_evaluation(evaluation, tz: ZoneInfo) -> str:
    verb = "dry-run" if evaluation.dry_run else "run"
    lines = [f"{verb} at {local_time(evaluation.at, tz)}"]
    if evaluation.stage_entries:
        recorded = "a run would record" if evaluation.dry_run else "recorded"
        lines.append(f"stage entries {recorded}: {counts_text(evaluation.stage_entries)}")
    for diagnostic in evaluation.diagnostics:
        if diagnostic.severity == "error":
            lines.append(f"skipped (invalid): {diagnostic.location}: {diagnostic.message}")
    for outcome in evaluation.outcomes:
        lines.append("")
        lines += _outcome_lines(outcome)
    lines += ["", summary_line(evaluation)]
    return "\n".join(lines)


def summary_line(evaluation) -> str:
    """`dry-run: 6 rules, 388 users planned, 102 held out, 1 failed; nothing written`."""
    outcomes = evaluation.outcomes
    parts = [
        plural(len(outcomes), "rule"),
        f"{plural(sum(o.planned for o in outcomes), 'user')} planned",
        f"{sum(o.held_out for o in outcomes)} held out",
    ]
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        parts.append(f"{failed} failed")
    if evaluation.dry_run:
        return f"dry-run: {', '.join(parts)}; nothing written"
    return f"run: {', '.join(parts)}"


def _outcome_lines(outcome) -> list[str]:
    if outcome.status != "done":
        lines = [f"{outcome.rule_id}: {STATUS_TEXT.get(outcome.status, outcome.status)}"]
        if outcome.error:
            lines.append(f"  error: {outcome.error}")
        return lines
    head = (
        f"{outcome.rule_id}: matched {outcome.matched}, planned {outcome.planned}, "
        f"held out {outcome.held_out}"
        + (f", shadow {outcome.shadow}" if outcome.shadow else "")
        + f"  ({outcome.duration_ms} ms)"
    )
    lines = [head]
    if outcome.suppressed:
        lines.append(f"  suppressed: {counts_text(outcome.suppressed)}")
    if outcome.variants:
        lines.append(f"  variants: {counts_text(outcome.variants)}")
    if outcome.actions:
        lines.append(f"  actions: {counts_text(outcome.actions)}")
    if outcome.audience_removed:
        lines.append(f"  audience members who no longer qualify: {outcome.audience_removed}")
    for sample in outcome.samples:
        label = sample["outcome"] + (f" ({sample['reason']})" if sample["reason"] else "")
        variant = f" [{sample['variant']}]" if sample["variant"] else ""
        actions = "; ".join(_action_text(a) for a in sample["actions"])
        lines.append(
            f"  {sample['user']}: {label}{variant}" + (f" -> {actions}" if actions else "")
        )
    return lines


def _action_text(action: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in action["params"].items() if v is not None)
    return f"{action['kind']}({params})"
