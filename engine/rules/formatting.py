"""`nudge fmt`: one layout for every rule file and rule test file.

ruamel.yaml's round trip keeps what people wrote on purpose (comments, key order,
flow `{...}` / `[...]` collections, quotes, anchors, block scalars) and makes
indentation consistent: 2 spaces per mapping level, list dashes indented 2 under
their key (`when:` / `  - ...`), the style every shipped rule and example uses. Lines
are never wrapped: a condition is easier to read on one line than folded.

Formatting must never change what a file means nor lose a note, so before a file is
rewritten the result is read back and compared (the same values, every comment still
there); a file that would not survive is reported and left alone rather than
"formatted". ruamel drops, for instance, a comment inside a multi-line `{...}`.
A file that does not parse is reported with file:line:col and left alone too.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from engine.errors import Diagnostic, LocatedError, Location
from engine.rules.loader import RULE_SUFFIXES
from engine.rules.yaml_source import parse_yaml, split_lines

TESTS_FOLDER = "tests"
# Wide enough that ruamel never folds a long condition or description.
NEVER_WRAP = 4096
# A comment starts at a `#` that begins the line or follows a space (YAML's rule).
_COMMENT = re.compile(r"(?:^|(?<=\s))#.*$")


@dataclass(frozen=True)
class FormattedFile:
    """One file: its text as found and as formatted (equal when nothing changes)."""

    path: Path
    original: str
    formatted: str

    @property
    def changed(self) -> bool:
        return self.original != self.formatted


@dataclass
class FormatReport:
    """What `nudge fmt` did (or, with --check, would do) to each file."""

    files: list[FormattedFile] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def changed(self) -> list[Path]:
        return [file.path for file in self.files if file.changed]

    @property
    def ok(self) -> bool:
        return not self.diagnostics

    def summary(self, *, check: bool) -> str:
        """`1 file would be reformatted, 10 unchanged, 1 error` (`reformatted` without check)."""
        changed = len(self.changed)
        verb = "would be reformatted" if check else "reformatted"
        text = f"{_count(changed, 'file')} {verb}, {len(self.files) - changed} unchanged"
        if self.diagnostics:
            text += f", {_count(len(self.diagnostics), 'error')}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": len(self.files),
            "changed": [str(path) for path in self.changed],
            "unchanged": [str(file.path) for file in self.files if not file.changed],
            "diagnostics": [diagnostic.as_dict() for diagnostic in self.diagnostics],
        }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def format_text(text: str, path: str = "<text>") -> str:
    """`text` in the standard layout; raises LocatedError when it cannot be formatted."""
    text = text.removeprefix("\ufeff")
    before = parse_yaml(text, path)  # every syntax problem, located, before anything else
    if before.data is None:
        return text  # empty or only comments: nothing to lay out
    formatted = _round_trip(text)
    after = parse_yaml(formatted, path)
    if after.data != before.data:
        message = "formatting would change what this file means; left as it is"
        raise LocatedError([Diagnostic(Location(path, 1, 1), message)])
    lost = _lost_comments(text, formatted)
    if lost:
        line, column, comment = lost[0]
        message = (
            f"formatting would lose the comment {comment!r} (ruamel.yaml keeps no comment "
            "inside a multi-line {...} or [...]); move it to the end of the line, then "
            "run nudge fmt again"
        )
        lines = split_lines(text)
        source = lines[line - 1] if line <= len(lines) else None
        raise LocatedError([Diagnostic(Location(path, line, column), message, "error", source)])
    return formatted


def _round_trip(text: str) -> str:
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)  # read as rule files are read: `no` is text, not false
    yaml.preserve_quotes = True
    yaml.width = NEVER_WRAP
    yaml.indent(mapping=2, sequence=4, offset=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a re-used anchor name; parse_yaml vetted it
        data = yaml.load(text)
    # With a version set ruamel would also write a `%YAML 1.2` directive: not ours to add.
    yaml.version = None
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _lost_comments(before: str, after: str) -> list[tuple[int, int, str]]:
    """(line, column, comment) of each comment of `before` whose text is nowhere in `after`.

    A `#` inside a quoted value looks like a comment here too; it survives formatting
    as part of its value, so it is never reported.
    """
    lost = []
    for number, line in enumerate(split_lines(before), start=1):
        match = _COMMENT.search(line)
        if match and match.group(0).rstrip() not in after:
            lost.append((number, match.start() + 1, match.group(0).rstrip()))
    return lost


def yaml_files(paths: list[Path]) -> list[Path]:
    """The files `nudge fmt` works on: each file given, and for each folder its YAML
    files and those of its tests/ folder (rules, segments.yaml, rule tests)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for folder in (path, path / TESTS_FOLDER):
                found += sorted(
                    child
                    for child in (folder.iterdir() if folder.is_dir() else ())
                    if child.is_file()
                    and child.suffix in RULE_SUFFIXES
                    and not child.name.startswith(".")
                )
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def format_paths(paths: list[Path], *, check: bool = False) -> FormatReport:
    """Format every file of `paths` in place; with `check`, only report what would change.

    A file that cannot be formatted is reported and left untouched; the others are
    still formatted.
    """
    report = FormatReport()
    for path in yaml_files(paths):
        try:
            original = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            report.diagnostics.append(Diagnostic(Location(str(path)), "no such file"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "the file is not UTF-8 text"
            report.diagnostics.append(Diagnostic(Location(str(path)), f"cannot read: {reason}"))
            continue
        try:
            formatted = format_text(original, str(path))
        except LocatedError as exc:
            report.diagnostics.extend(exc.diagnostics)
            continue
        result = FormattedFile(path, original, formatted)
        report.files.append(result)
        if result.changed and not check:
            path.write_text(formatted, encoding="utf-8", newline="")
    return report
