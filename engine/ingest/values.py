"""Parsers for single input values: times, booleans, money, codes.

Each parser takes what a CSV cell or a JSON value holds and returns the stored value,
or raises `RowError` with a reason a shop's data person can act on. Blank values are
handled by the callers (they mean "not given").
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale

from engine.localtime import NonexistentTimeError, wall_to_utc


class RowError(ValueError):
    """One input row cannot be stored; the message is the reject reason."""


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
# Two decimals: the scale of the Money column; more would be silently rounded.
_CENT = Decimal("0.01")
_MAX_AMOUNT = Decimal("999999999999.99")


def text(value: Any, field: str, max_length: int) -> str:
    """A string value; numbers from JSON (ids, order numbers) become their digits."""
    if isinstance(value, bool) or isinstance(value, dict | list):
        raise RowError(f"{field} must be a string, got {_json_kind(value)}")
    if isinstance(value, float):
        raise RowError(f"{field} must be a string, got a number with a fraction")
    result = str(value).strip()
    if len(result) > max_length:
        raise RowError(f"{field} is longer than {max_length} characters")
    return result


def boolean(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise RowError(f"{field} must be true/false, 1/0 or yes/no, got {value!r}")


def amount(value: Any, field: str = "amount") -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"{field} must be a number, got {_json_kind(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise RowError(f"{field} is not a number: {value!r}") from None
    if not number.is_finite():
        raise RowError(f"{field} is not a finite number: {value!r}")
    if number < 0:
        raise RowError(f"{field} must not be negative, got {value}")
    rounded = number.quantize(_CENT)
    if rounded != number:
        raise RowError(f"{field} has more than 2 decimals: {value}")
    if rounded > _MAX_AMOUNT:
        raise RowError(f"{field} is too large: {value}")
    return rounded


def currency(value: Any) -> str:
    code = text(value, "currency", 3).upper()
    if not _CURRENCY.match(code):
        raise RowError(f"currency must be a 3-letter ISO 4217 code, got {value!r}")
    return code


def country(value: Any) -> str:
    code = text(value, "country", 8).upper()
    if code not in _countries():
        raise RowError(f"country must be an ISO 3166 alpha-2 code such as CN or US, got {value!r}")
    return code


def timezone(value: Any) -> str:
    name = text(value, "timezone", 64)
    if _zone(name) is None:
        raise RowError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)")
    return name


def locale(value: Any) -> str:
    tag = text(value, "locale", 16)
    if not _LOCALE.match(tag):
        raise RowError(f"locale must look like zh-CN or en, got {value!r}")
    return tag


def instant(value: Any, field: str, shop_zone: ZoneInfo) -> datetime:
    """An ISO 8601 time; without an offset it is a wall-clock time in the shop's zone.

    A wall-clock time that does not exist (the hour skipped when clocks spring forward)
    is rejected rather than guessed. One that happens twice (the hour repeated in
    autumn) is read as the first occurrence (fold=0, still on summer time).
    """
    if not isinstance(value, str):
        raise RowError(f"{field} must be an ISO 8601 time string, got {_json_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RowError(f"{field} is not an ISO 8601 time: {value!r}") from None
    try:
        return wall_to_utc(parsed, shop_zone)
    except NonexistentTimeError:
        raise RowError(
            f"{field} {value!r} does not exist in {shop_zone.key} "
            "(clocks jump forward at that hour); give the time with its UTC offset"
        ) from None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return "a number"
    return repr(value)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    # Babel's territory list: two letters are countries, three digits are regions;
    # ZZ (unknown), EU, EZ, UN and QO (groupings) are not countries.
    pseudo = {"ZZ", "EU", "EZ", "UN", "QO"}
    return frozenset(c for c in Locale("en").territories if len(c) == 2 and c not in pseudo)
