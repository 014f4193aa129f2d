"""`rules/segments.yaml`: named, reusable conditions for `in_segment("name")`.

```yaml
high-value: total_spent >= 1000 and purchase_count >= 3
gold-members: member_tier == "gold"
```
A bad entry is reported and left out; the other segments still load.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import Diagnostic, LocatedError, Location
from engine.rules.fields import SLUG_PATTERN
from engine.rules.located_text import LocatedText
from engine.rules.yaml_source import parse_yaml

SEGMENT_FILES = ("segments.yaml", "segments.yml")


def load_segments(folder: Path) -> tuple[dict[str, LocatedText], list[Diagnostic]]:
    """Segment name -> condition text, and the problems found (never raises)."""
    path = next((folder / name for name in SEGMENT_FILES if (folder / name).is_file()), None)
    if path is None:
        return {}, []
    display = str(path)
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        return {}, [Diagnostic(Location(display, 1, 1), f"cannot read segments: {reason}")]
    try:
        document = parse_yaml(text, display)
    except LocatedError as exc:
        return {}, exc.diagnostics
    if document.data is None:
        return {}, []
    if not isinstance(document.data, dict):
        message = "segments.yaml maps segment names to conditions (name: condition)"
        return {}, [document.diagnostic((), message)]
    segments: dict[str, LocatedText] = {}
    diagnostics: list[Diagnostic] = []
    for name in document.data:
        if not isinstance(name, str) or not re.match(SLUG_PATTERN, name):
            message = (
                f"segment name {name!r} must be lowercase letters and digits joined by '-' or '_'"
            )
            diagnostics.append(document.diagnostic((name,), message, key=True))
            continue
        located = document.located_text((name,))
        if located is None or not located.text.strip():
            message = f"segment {name!r} needs a condition as text, e.g. total_spent >= 1000"
            diagnostics.append(document.diagnostic((name,), message))
            continue
        segments[name] = located
    return segments, diagnostics
