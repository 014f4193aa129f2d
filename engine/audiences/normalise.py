"""Per-platform normalisation and hashing of contact data (docs/specs/audiences.md).

Google and Meta normalise differently (Google removes dots in gmail addresses and
keeps the `+` of phone numbers; Meta does neither), so there is one normaliser per
platform and no shared one: a hash that differs by one character matches nobody.

A value that cannot be normalised raises `Rejected`; exporters leave that field
empty rather than upload a hash that can never match.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata

from engine.phones import InvalidPhone, format_e164, parse_phone

GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


class Rejected(ValueError):
    """Raised for a value a platform would not accept (e.g. an email without '@')."""


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _email_parts(text: str) -> tuple[str, str]:
    value = text.strip()
    if not value or any(ch.isspace() for ch in value) or value.count("@") != 1:
        raise Rejected(f"not an email address: {text!r}")
    local, domain = value.lower().split("@")
    if not local or not domain:
        raise Rejected(f"not an email address: {text!r}")
    return local, domain


def e164(text: str, user_country: str | None = None, shop_country: str | None = None) -> str:
    """The number in E.164, read by the one phone parser (engine/phones.py): with "+"
    or "00" it is international, else national to the user's country, else the shop's.

    This is the platforms' formatting only, like their own formatters and vectors
    (Meta's +1 555 987 6543 is a fictional number): whether a number is valid in its
    country, and so worth uploading at all, is decided by exports (`phones.to_e164`).
    """
    try:
        return format_e164(parse_phone(text, user_country, shop_country))
    except InvalidPhone as exc:
        raise Rejected(str(exc)) from None


def _name(text: str, *, strip_punctuation: bool) -> str:
    value = unicodedata.normalize("NFC", text).strip().lower()
    if strip_punctuation:
        value = _PUNCTUATION.sub("", value)
    if not value:
        raise Rejected("empty name")
    return value


# ---------------- Google Customer Match


def google_email(text: str) -> str:
    local, domain = _email_parts(text)
    if domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            raise Rejected(f"not an email address: {text!r}")
    return f"{local}@{domain}"


def google_phone(
    text: str, user_country: str | None = None, shop_country: str | None = None
) -> str:
    """E.164 with the plus: '+1-800-555-0100' -> '+18005550100'."""
    return e164(text, user_country, shop_country)


def google_first_name(text: str) -> str:
    return _name(text, strip_punctuation=False)


def google_last_name(text: str) -> str:
    return _name(text, strip_punctuation=True)


def google_country(text: str) -> str:
    value = text.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise Rejected(f"not an ISO 3166 alpha-2 country: {text!r}")
    return value


# ---------------- Meta Custom Audiences


def meta_email(text: str) -> str:
    local, domain = _email_parts(text)
    return f"{local}@{domain}"


def meta_phone(text: str, user_country: str | None = None, shop_country: str | None = None) -> str:
    """Digits with country code, no '+', no leading zeros: '+1 (555) 987-6543' -> '15559876543'.

    E.164 without its '+' (a calling code never starts with 0, so neither does this).
    """
    return e164(text, user_country, shop_country).removeprefix("+")


def meta_name(text: str) -> str:
    return _name(text, strip_punctuation=True)


def meta_country(text: str) -> str:
    return google_country(text).lower()


NORMALISERS = {
    "google": {
        "email": google_email,
        "phone": google_phone,
        "first_name": google_first_name,
        "last_name": google_last_name,
        "country": google_country,
    },
    "meta": {
        "email": meta_email,
        "phone": meta_phone,
        "first_name": meta_name,
        "last_name": meta_name,
        "country": meta_country,
    },
}

# Country and zip are not hashed for Google Customer Match; Meta hashes everything.
UNHASHED = {"google": {"country", "zip"}, "meta": set()}


def normalise(platform: str, field: str, value: str, **options) -> str:
    """The platform's normal form of one field (raises Rejected)."""
    function = NORMALISERS[platform][field]
    if field == "phone":
        # A number without "+" is read in the user's country, else the shop's.
        return function(value, options.get("user_country"), options.get("shop_country"))
    return function(value)


def normalise_and_hash(platform: str, field: str, value: str, **options) -> str:
    """What is uploaded: the normal form, SHA-256 hex unless the platform sends it plain."""
    normal = normalise(platform, field, value, **options)
    return normal if field in UNHASHED[platform] else sha256_hex(normal)
