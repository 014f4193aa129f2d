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


def international_digits(text: str, default_country_code: str | None = None) -> str:
    """Digits of the number with its country code.

    A number written with '+' or '00' already has one; any other number gets
    `default_country_code` (the shop's [shop] phone_country_code), after dropping a
    national trunk '0', when one is given.
    """
    stripped = text.strip()
    digits = re.sub(r"\D", "", stripped)
    if not digits:
        raise Rejected(f"not a phone number: {text!r}")
    if stripped.startswith("+"):
        return digits
    if stripped.startswith("00"):
        return digits[2:]
    if default_country_code:
        return default_country_code + digits.lstrip("0")
    return digits


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


def google_phone(text: str, default_country_code: str | None = None) -> str:
    """E.164 with the plus: '+1-800-555-0100' -> '+18005550100'."""
    return "+" + international_digits(text, default_country_code)


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


def meta_phone(text: str, default_country_code: str | None = None) -> str:
    """Digits with country code, no '+', no leading zeros: '+1 (555) 987-6543' -> '15559876543'."""
    digits = international_digits(text, default_country_code).lstrip("0")
    if not digits:
        raise Rejected(f"not a phone number: {text!r}")
    return digits


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
        return function(value, options.get("default_country_code"))
    return function(value)


def normalise_and_hash(platform: str, field: str, value: str, **options) -> str:
    """What is uploaded: the normal form, SHA-256 hex unless the platform sends it plain."""
    normal = normalise(platform, field, value, **options)
    return normal if field in UNHASHED[platform] else sha256_hex(normal)
