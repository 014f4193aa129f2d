"""The one error type of the condition language.

Offsets are 0-based character offsets into the condition text, so that the rule
loader can turn them into `file:line:col` with a caret under the offending token.
"""

from __future__ import annotations

from engine.errors import NudgeError


class ConditionError(NudgeError):
    """Raised when a condition cannot be parsed, type-checked or compiled.

    `offset`/`length` locate the offending text inside the condition; `segment`
    names the segment whose text they refer to when the error is inside a named
    segment (rules/segments.yaml) rather than in the condition itself.
    """

    def __init__(self, message: str, offset: int, length: int = 1, *, segment: str | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.length = max(length, 1)
        self.segment = segment

    def __repr__(self) -> str:
        return f"ConditionError({self.message!r}, {self.offset}, {self.length})"

    def caret(self, text: str) -> str:
        """The condition's offending line with carets under the error (for messages)."""
        start = text.rfind("\n", 0, self.offset) + 1
        end = text.find("\n", self.offset)
        line = text[start : end if end != -1 else len(text)]
        column = self.offset - start
        width = max(1, min(self.length, len(line) - column))
        return f"{line}\n{' ' * column}{'^' * width}"
