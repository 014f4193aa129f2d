"""Exceptions of the creatives package.

`CreativeAbort` is not an error: a template calls `abort("reason")` when it cannot
produce a sensible message for this user, and the sender skips that message with
the reason recorded instead of sending broken text.
"""

from __future__ import annotations

from engine.errors import Diagnostic, LocatedError, NotFoundError, NudgeError


class CreativeAbort(Exception):
    """Raised by the `abort("reason")` template helper; the message is skipped."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class InvalidCreativeNameError(NudgeError):
    """Raised when a creative or surface name could escape the templates folder."""


class CreativeNotFoundError(NotFoundError):
    """Raised when no folder templates/<name>/ or no template for a surface exists."""


class TemplateProblemError(LocatedError):
    """Raised when a template fails to parse or render; names its file and line."""

    @classmethod
    def single(cls, diagnostic: Diagnostic) -> TemplateProblemError:
        return cls([diagnostic])


class RenderLimitError(Exception):
    """Raised inside rendering when a template exceeds its time, size or range budget."""
