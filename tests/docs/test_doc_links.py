"""Every link in the repository's Markdown resolves inside the repository.

A fresh clone is all a reader has: a link to a file outside it (the design folder
the specs came from, a sibling checkout) or to a file since renamed is a dead end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "demo-shop", "test-artifacts", "node_modules", "build", "dist"}
# The design folder beside a checkout (spelt in parts so this guard does not match
# itself): nothing in the repository may point there.
OUTSIDE_MARKERS = ("../" + "shared", "shared" + "/specs")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return sorted(
        path for path in REPO.rglob("*.md") if not SKIP.intersection(path.relative_to(REPO).parts)
    )


def relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    # Code blocks show commands and examples, not links.
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve_inside_the_repository(path):
    broken = []
    for target in relative_links(path):
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(REPO) or not resolved.exists():
            broken.append(target)
    assert broken == [], f"{path.relative_to(REPO)}: links that do not resolve: {broken}"


def test_nothing_refers_outside_the_repository():
    offenders = []
    for path in REPO.rglob("*"):
        if SKIP.intersection(path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".sh", ""}:
            continue
        if path == Path(__file__):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if any(marker in text for marker in OUTSIDE_MARKERS):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
