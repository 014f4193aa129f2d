"""The exception tree. Every expected error carries a message a user can act on.

The CLI turns any `NudgeError` into `Error: <message>` and exit code 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class NudgeError(Exception):
    """Base of every expected, user-facing error."""


class ConfigError(NudgeError):
    """Raised when nudge.toml or an environment override holds a bad value."""


class SchemaOutOfDateError(NudgeError):
    """Raised when the database schema is older than this version of Nudge."""


class IngestError(NudgeError):
    """Raised when an input file cannot be read at all (not for single bad rows)."""


class NotFoundError(NudgeError):
    """Raised when a named user, rule or creative does not exist."""


class DaemonAlreadyRunning(NudgeError):
    """Raised when another daemon already runs on this SQLite database file.

    `lock_path` is the lock file; `holder` what its holder wrote there (pid, host,
    started, owner), empty when it could not be read.
    """

    def __init__(self, message: str, *, lock_path: Path, holder: dict[str, str]):
        super().__init__(message)
        self.lock_path = lock_path
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a source file, 1-based line and column."""

    path: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.path]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One located problem, printed as `file:line:col: severity: message`.

    `source_line` is the offending line so that a caret can point at the column.
    """

    location: Location
    message: str
    severity: str = "error"
    source_line: str | None = None

    def render(self, relative_to: Path | None = None) -> str:
        """`file:line:col: severity: message`, the source line and a caret.

        With `relative_to`, a path inside that folder is shown relative to it, as
        compilers do, so the output stays short and clickable in editors.
        """
        where = str(self.location)
        if relative_to is not None:
            try:
                shown = Path(self.location.path).relative_to(relative_to)
                where = str(Location(str(shown), self.location.line, self.location.column))
            except ValueError:
                pass
        head = f"{where}: {self.severity}: {self.message}"
        if self.source_line is None:
            return head
        caret_at = max((self.location.column or 1) - 1, 0)
        return f"{head}\n    {self.source_line.rstrip()}\n    {' ' * caret_at}^"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.path,
            "line": self.location.line,
            "column": self.location.column,
            "severity": self.severity,
            "message": self.message,
        }


class LocatedError(NudgeError):
    """Raised with one or more diagnostics (rule files, templates, conditions)."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.render() for d in diagnostics))
