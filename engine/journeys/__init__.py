"""`nudge journeys`: the rules linked by `after:` triggers and exclusive groups.

graph.py builds the map (trees of follow-ups, groups, loops); text.py draws it for the
terminal, html.py as a self-contained page.
"""

from __future__ import annotations

from pathlib import Path

from engine.journeys.graph import JourneyMap, Node, Step, build_journeys
from engine.journeys.html import render_html, write_html
from engine.journeys.text import render_text

__all__ = [
    "JourneyMap",
    "Node",
    "Step",
    "build_journeys",
    "load_journeys",
    "render_html",
    "render_text",
    "write_html",
]


def load_journeys(rules_dir: Path) -> JourneyMap:
    """The journey map of a rules folder; invalid rules are listed as skipped."""
    from engine.rules import load_rules

    result = load_rules(rules_dir)
    return build_journeys(result.rules, [key for key in result.broken if key in _stems(rules_dir)])


def _stems(rules_dir: Path) -> set[str]:
    from engine.rules.loader import rule_files

    return {path.stem for path in rule_files(rules_dir)}
