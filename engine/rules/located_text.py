"""Text taken from a YAML file that remembers where each of its characters came from.

Conditions are written inside YAML scalars (plain, quoted, or block `|` / `>`), so a
parser error at character 12 of the expression must be shown at the right line and
column of the file, with escapes (`\\"`), doubled quotes (`''`), folded lines and block
indentation all accounted for. `LocatedText` keeps one position per character.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from engine.errors import Diagnostic, Location

UNKNOWN_SOURCE = "<text>"


class LocatedText:
    """A string plus the file position of each character (1-based line and column)."""

    __slots__ = ("text", "location", "_positions", "_lines")

    def __init__(
        self,
        text: str,
        location: Location,
        positions: Sequence[tuple[int, int]] | None = None,
        source_lines: Sequence[str] | None = None,
    ):
        self.text = text
        self.location = location
        # positions[i] is (line, column) of text[i]; one extra entry for the end.
        self._positions = tuple(positions) if positions is not None else None
        self._lines = tuple(source_lines) if source_lines is not None else None

    @classmethod
    def unlocated(cls, text: str) -> LocatedText:
        """Text built in code (tests, API): positions count from column 1 of one line."""
        return cls(text, Location(UNKNOWN_SOURCE, 1, 1))

    def offset_location(self, offset: int) -> Location:
        """The file position of the character at 0-based `offset` in `text`.

        Offsets past the end map to just after the last character; negative ones to
        the start, so a parser's "unexpected end" error still points somewhere useful.
        """
        offset = min(max(offset, 0), len(self.text))
        if self._positions is not None and offset < len(self._positions):
            line, column = self._positions[offset]
            return Location(self.location.path, line, column)
        line = self.location.line or 1
        column = self.location.column or 1
        # Unlocated (or single-line) text: columns advance one per character.
        before = self.text[:offset]
        breaks = before.count("\n")
        if breaks:
            return Location(self.location.path, line + breaks, len(before) - before.rfind("\n"))
        return Location(self.location.path, line, column + offset)

    def source_line(self, line: int | None) -> str | None:
        """The file's text on `line` (1-based), when the file is known."""
        if self._lines is None or line is None or not 1 <= line <= len(self._lines):
            return None
        return self._lines[line - 1]

    def diagnostic(self, message: str, offset: int = 0, severity: str = "error") -> Diagnostic:
        """A diagnostic pointing at character `offset`, with the file line for the caret."""
        location = self.offset_location(offset)
        source = self.source_line(location.line)
        if source is None and self._lines is None and "\n" not in self.text:
            source = self.text if self.location.path == UNKNOWN_SOURCE else None
        return Diagnostic(location, message, severity, source)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"LocatedText({self.text!r}, {self.location})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LocatedText):
            return self.text == other.text and self.location == other.location
        if isinstance(other, str):
            return self.text == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Rule files hand pydantic ready-made LocatedText values; code may pass str.
        return core_schema.no_info_plain_validator_function(
            _to_located_text,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string"}


def _to_located_text(value: Any) -> LocatedText:
    if isinstance(value, LocatedText):
        return value
    if isinstance(value, str):
        return LocatedText.unlocated(value)
    raise PydanticCustomError("string_type", "Input should be a valid string")
