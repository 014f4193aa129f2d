"""Phone numbers by the book: the one normaliser of audience exports and SMS.

Numbers are read with libphonenumber (the `phonenumbers` package), never by gluing a
calling code onto digits: a national number is read in its region's own dialling
plan, so a US "1 800 555 0100" loses its trunk "1" (+18005550100) while an Italian
"06 1234 5678" keeps its leading zero, which is part of the number (+390612345678).

A number written with "+" or the "00" international prefix is international. Any
other number is national to the user's country (`users.country`), else the shop's
(`[shop] country`); `[shop] phone_country_code` is no longer read.

`to_e164` also checks the number against its country's numbering plan: a number that
is not valid there would reach someone else or no one, so exports leave it out and
SMS skips it, both saying why (`InvalidPhone.reason`).
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

# InvalidPhone.reason: not a phone number at all / not one its country has.
UNPARSEABLE = "unparseable"
INVALID = "invalid"

_PARSE_PROBLEMS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country calling code",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}


class InvalidPhone(ValueError):
    """Raised for a number that cannot be read (`reason` "unparseable") or is not a
    valid number in its country (`reason` "invalid"); the message quotes it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def region_for(user_country: str | None, shop_country: str | None) -> str | None:
    """The region a number without "+" is read in: the user's country, else the
    shop's. A country libphonenumber does not know (a typo, "UK") counts as none."""
    for country in (user_country, shop_country):
        region = (country or "").strip().upper()
        if region in phonenumbers.SUPPORTED_REGIONS:
            return region
    return None


def parse_phone(raw: str, user_country: str | None, shop_country: str | None) -> PhoneNumber:
    """The number `raw` denotes, without judging whether its country has it."""
    text = raw.strip()
    if text.startswith("00"):
        # "00" is the international prefix of most of the world (China's, Italy's), but
        # not of every region's plan (the US dials 011): read it as "+" wherever it is.
        text = "+" + text[2:]
    region = region_for(user_country, shop_country)
    if region is None and not text.startswith("+"):
        raise InvalidPhone(
            UNPARSEABLE, f"{raw!r} has no country code, and no country to read it in"
        )
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        problem = _PARSE_PROBLEMS.get(exc.error_type)
        if problem is None:
            raise InvalidPhone(UNPARSEABLE, f"{raw!r} is not a phone number") from None
        raise InvalidPhone(UNPARSEABLE, f"{raw!r}: {problem}") from None


def format_e164(number: PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def to_e164(raw: str, user_country: str | None, shop_country: str | None) -> str:
    """E.164 with the "+" ("+18005550100"); raises InvalidPhone when `raw` cannot be
    read or is not a valid number in its country."""
    number = parse_phone(raw, user_country, shop_country)
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(
            INVALID, f"{raw!r} is not a valid phone number (read as {format_e164(number)})"
        )
    return format_e164(number)
