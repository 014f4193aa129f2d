"""Amounts in the shop currency: what a purchase in another currency is stored as.

Every sum in Nudge (profiles, `sum("purchase.amount")`, GMV, AOV, the VIP threshold)
adds up `events.amount`, so that column holds the shop currency only. An amount in
another currency is converted at ingest with its rate from nudge.toml
(`[currency] rates`, 1 unit of that currency = rate units of the shop currency), and
what the shop sent is kept in `original_amount` / `original_currency`. Without a rate
the row is rejected: adding CNY to USD would be silently wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal

from engine.config import Settings
from engine.ingest.values import MAX_AMOUNT, RowError

_CENT = Decimal("0.01")


@dataclass(frozen=True)
class ShopCurrency:
    """The shop currency and the rates into it."""

    code: str
    rates: Mapping[str, Decimal]

    @classmethod
    def of(cls, settings: Settings) -> ShopCurrency:
        return cls(settings.shop.currency, dict(settings.currency.rates))

    def convert(self, amount: Decimal, currency: str) -> Decimal:
        """`amount` in `currency` as an amount in the shop currency (cents)."""
        if currency == self.code:
            return amount
        rate = self.rates.get(currency)
        if rate is None:
            raise RowError(
                f"no exchange rate for {currency}: add it to nudge.toml as "
                f"[currency] rates = {{{currency} = N}}, where 1 {currency} = N {self.code}"
            )
        converted = _exact_product(amount, rate)
        # Checked before rounding, which cannot round a value past the context precision.
        if converted > MAX_AMOUNT:
            raise RowError(
                f"amount {amount} {currency} is {converted:.2f} {self.code} at the rate "
                f"{rate}: out of range (at most {MAX_AMOUNT})"
            )
        # Half-even ("banker's rounding"): each converted event is rounded once and then
        # summed over thousands of events (total_spent, GMV, sum()). Rounding every tie
        # up would push those totals up by half a cent per tie; half-even sends ties up
        # and down alike, so they cancel out on average.
        return converted.quantize(_CENT, rounding=ROUND_HALF_EVEN)


def _exact_product(amount: Decimal, rate: Decimal) -> Decimal:
    # Exact product first (a coefficient of n and one of m digits multiply into at most
    # n + m digits; the exponent range is the widest Decimal has), so it is rounded once.
    digits = len(amount.as_tuple().digits) + len(rate.as_tuple().digits)
    context = Context(prec=digits, Emax=MAX_EMAX, Emin=MIN_EMIN)
    return context.multiply(amount, rate)
