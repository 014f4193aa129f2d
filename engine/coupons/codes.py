"""Coupon codes: Crockford base32 from a CSPRNG, and the normalisation of typed input.

Crockford's alphabet drops I, L, O and U so that a code read aloud or copied by hand
cannot be mistyped into another valid code; on input, O is read as 0 and I/L as 1,
case and hyphens are ignored (https://www.crockford.com/base32.html).
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INPUT_FIXES = str.maketrans({"O": "0", "I": "1", "L": "1"})
GROUP = 4  # printed in groups of four symbols: easier to read and type


def generate_code(length: int = 12, prefix: str | None = None) -> str:
    """A new printable code like 'WELCOME-7K3M-Q9TX-2BHD' (prefix optional)."""
    if length < 10:
        raise ValueError("coupon codes have at least 10 random symbols (50 bits)")
    # 32 symbols: five random bits each, drawn at once (one CSPRNG call per code, not
    # one per symbol); uniform over every code of this length, as choice() per symbol is.
    bits = secrets.randbits(5 * length)
    symbols = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(length))
    groups = [symbols[i : i + GROUP] for i in range(0, length, GROUP)]
    return "-".join([prefix, *groups] if prefix else groups)


def normalise_code(text: str) -> str:
    """The lookup key of a typed code: upper case, no hyphens or spaces, O->0, I/L->1."""
    cleaned = "".join(ch for ch in text.strip().upper() if ch not in "- ")
    return cleaned.translate(_INPUT_FIXES)
