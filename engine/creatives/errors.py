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


# Why a message that prints an offer fact without a coupon is skipped (the outbox
# keeps the first 64 characters of "template: <reason>", so the gist comes first).
NO_OFFER_REASONS = {
    "value": "no discount to show: the rule needs a coupon action with value or percent_off",
    "percent_off": "no discount to show: the rule needs a coupon action with value or percent_off",
    "min_order": "no minimum order to show: the rule needs a coupon action",
    "expires_at": "no end date to show: the rule needs a coupon action",
    "code": "no coupon code to show: the rule needs a coupon action",
}


class OfferFactMissing(CreativeAbort):
    """Raised when a template prints an offer fact (`offer.code`...) of a message that
    has no coupon: that message is skipped, and `nudge check` reports the template line."""

    def __init__(self, fact: str):
        self.fact = fact
        super().__init__(NO_OFFER_REASONS.get(fact, f"no {fact} to show: the rule has no coupon"))


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
