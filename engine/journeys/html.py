"""`nudge journeys --html FILE`: the journey map as one self-contained page.

Trees are nested lists drawn by inline CSS (no script, no font, no image, nothing to
fetch), so the file opens anywhere, offline, and fits a phone. Rendered like the
report (engine/measurement/html.py): Jinja2 in a sandboxed, autoescaping environment,
from templates/journeys.html.jinja shipped in the package; rule ids, descriptions and
conditions are text, never markup.
"""

from __future__ import annotations

from pathlib import Path

from engine.journeys.graph import JourneyMap
from engine.pages import page_environment

TEMPLATE = "journeys.html.jinja"


def render_html(journeys: JourneyMap, title: str = "Journeys") -> str:
    """The whole page as a string."""
    groups = [
        (name, [(rule_id, journeys.steps[rule_id].priority) for rule_id in members])
        for name, members in journeys.groups.items()
    ]
    return (
        page_environment("engine.journeys")
        .get_template(TEMPLATE)
        .render(
            title=title,
            summary=summary(journeys),
            journeys=journeys.journeys,
            single_steps=journeys.single_steps,
            groups=groups,
            cycles=journeys.cycles,
            skipped=journeys.skipped,
        )
    )


def write_html(journeys: JourneyMap, path: Path, title: str = "Journeys") -> Path:
    """Render the page into `path` (its folder is created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(journeys, title), encoding="utf-8", newline="\n")
    return path


def summary(journeys: JourneyMap) -> str:
    """ "6 rules: 1 journey of 2 steps, 1 exclusive group" and the like."""
    parts = [_count(len(journeys.steps), "rule")]
    sequences = journeys.journeys
    if sequences:
        steps = sum(tree.size() for tree in sequences)
        parts.append(f"{_count(len(sequences), 'journey')} of {steps} steps in all")
    if journeys.groups:
        parts.append(_count(len(journeys.groups), "exclusive group"))
    if journeys.cycles:
        parts.append(_count(len(journeys.cycles), "cycle"))
    if journeys.skipped:
        parts.append(f"{len(journeys.skipped)} skipped (invalid)")
    return parts[0] + (": " + ", ".join(parts[1:]) if parts[1:] else "")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
