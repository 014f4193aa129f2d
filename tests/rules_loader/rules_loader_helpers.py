"""Writing rule files for the loader tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.errors import LocatedError
from engine.rules import load_rule_file

VALID = """\
trigger:
  stage: lapsed_member
actions:
  tag: {add: [winback]}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors_of(folder: Path, text: str, name: str = "r.yaml") -> list[str]:
    """Every rendered diagnostic of one rule file, with the folder stripped."""
    path = write(folder, name, text)
    try:
        load_rule_file(path)
    except LocatedError as exc:
        return [d.render().replace(f"{folder}/", "") for d in exc.diagnostics]
    return []
