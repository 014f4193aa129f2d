"""Offer facts as they appear in rendered text: amounts, percentages, currency, code, dates.

The ad <-> landing check finds every fact in an ad and requires it on the landing
page rendered for the same user and variant. Facts are found by shape (a number with
or without a currency sign, a percentage, a code-like token) and not only by the
offer's values, so an amount typed by hand into an ad ("¥25" while the offer says 20)
is caught too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any

from babel.dates import format_date
from babel.numbers import get_currency_symbol

_NUMBER = re.compile(
    r"(?P<currency>[A-Z]{2,3}[$¥€£]|[$¥€£￥]|CNY|USD|EUR|GBP|RMB)?\s?"
    r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<percent>\s?%)?"
)
# A coupon-code-like token: capitals and digits, with at least one of each.
_CODE = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z][A-Z0-9-]{3,}\b")
_DATE_FORMATS = ("full", "long", "medium", "short")


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str  # amount, percentage, currency, code, minimum order, end date, number
    text: str  # as shown
    key: str  # what must match on the landing page


def _decimal(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value).replace(",", "")).normalize()
    except InvalidOperation:
        return None


def _date_texts(offer: dict, babel_locale: str, tz) -> list[str]:
    expires = offer.get("expires_at")
    if not isinstance(expires, datetime):
        return []
    day = expires.astimezone(tz).date()
    texts = {format_date(day, format=f, locale=babel_locale) for f in _DATE_FORMATS}
    texts.add(day.isoformat())
    return sorted(texts, key=len, reverse=True)


def find_facts(text: str, offer: dict, babel_locale: str, tz) -> list[Fact]:
    """Every offer fact shown in `text`, in order of kind."""
    facts: list[Fact] = []
    rest = text
    for shown in _date_texts(offer, babel_locale, tz):
        if shown in rest:
            facts.append(Fact("end date", shown, "date"))
            rest = rest.replace(shown, " ")
    codes = {offer["code"]} if offer.get("code") else set()
    codes.update(_CODE.findall(rest))
    for code in sorted(codes, key=len, reverse=True):
        if code in rest:
            facts.append(Fact("code", code, f"code:{code}"))
            rest = rest.replace(code, " ")
    currency = offer.get("currency")
    if currency:
        symbol = get_currency_symbol(currency, locale=babel_locale)
        for shown in dict.fromkeys((symbol, currency)):
            if shown and shown in rest:
                facts.append(Fact("currency", shown, f"currency:{currency}"))
                break
    value, minimum = _decimal(offer.get("value")), _decimal(offer.get("min_order"))
    for match in _NUMBER.finditer(rest):
        number = _decimal(match["number"])
        if match["percent"]:
            kind = "percentage"
        elif number == minimum and number != value:
            kind = "minimum order"
        elif match["currency"] or number == value:
            kind = "amount"
        else:
            kind = "number"
        facts.append(Fact(kind, match.group().strip(), f"number:{number}"))
    return facts


class _TextOfHtml(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head"):
            self._skip = max(self._skip - 1, 0)

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The text a visitor sees: tags, <head>, styles and scripts removed."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src", "action") and value:
                self.urls.append(value)


_URL = re.compile(r"https?://[^\s<>\"'）)]+")


def links_in(text: str, *, is_html: bool) -> list[str]:
    if not is_html:
        return _URL.findall(text)
    parser = _Links()
    parser.feed(text)
    parser.close()
    return parser.urls + _URL.findall(visible_text(text))
