"""The parameters of a `coupon` action: what a code is worth and how long it lasts.

The `coupon` action kind (engine/actions/coupon.py) validates rule files with them;
issuing (engine/coupons/issue.py) reads them back from the outbox row.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from engine.action_kinds import ActionParams
from engine.durations import parse_duration

MIN_CODE_LENGTH = 10


class CouponParams(ActionParams):
    """Exactly one of `value` (amount off) or `percent_off`."""

    value: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)] | None = None
    """Amount off, in `currency`."""
    percent_off: Annotated[int, Field(ge=1, le=100)] | None = None
    """Percentage off the order, 1 to 100."""
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    """ISO 4217 code; default: the shop currency (nudge.toml [shop] currency)."""
    min_order: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)] | None = None
    """Minimum order amount for the code to apply."""
    expires_in: str = "30d"
    """How long the code is valid after it is issued: '14d', '48h', '2w'."""
    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,12}$")] | None = None
    """Printed before the random part, as PREFIX-XXXX...; upper-case letters and digits."""
    length: Annotated[int, Field(ge=MIN_CODE_LENGTH, le=32)] = 12
    """Symbols in the random part (Crockford base32: 5 bits each; 10 symbols = 50 bits)."""

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_discount(self) -> CouponParams:
        if (self.value is None) == (self.percent_off is None):
            raise ValueError("give exactly one of 'value' (amount off) or 'percent_off'")
        if self.percent_off is not None and self.currency is not None and self.min_order is None:
            # A currency only matters for an amount or a minimum order.
            raise ValueError("'currency' applies to 'value' or 'min_order', not 'percent_off'")
        return self
