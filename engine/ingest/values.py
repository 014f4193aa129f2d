"""Parsers for single input values: times, booleans, money, codes.

Each parser takes what a CSV cell or a JSON value holds and returns the stored value,
or raises `RowError` with a reason a shop's data person can act on. Blank values are
handled by the callers (they mean "not given").

A value is checked against what its column can hold before it is converted (an
amount's range, a time's year, text the databases refuse, JSON that is not JSON), so
no value ever raises anything but `RowError`: one bad value rejects its row, never
the import or the batch (tests/ingest/test_fuzz.py holds every column to that).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale

from engine.localtime import NonexistentTimeError, wall_to_utc, zone_named


class RowError(ValueError):
    """One input row cannot be stored; the message is the reject reason."""


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
# Two decimals: the scale of the Money column; more would be silently rounded.
_CENT = Decimal("0.01")
# The largest value of Money = Numeric(14, 2); PostgreSQL refuses more (aborting the
# whole batch) and SQLite would store it, so the two backends would disagree.
MAX_AMOUNT = Decimal("999999999999.99")


def text(value: Any, field: str, max_length: int) -> str:
    """A string value; numbers from JSON (ids, order numbers) become their digits."""
    if isinstance(value, bool) or isinstance(value, dict | list):
        raise RowError(f"{field} must be a string, got {_json_kind(value)}")
    if isinstance(value, float):
        # orjson reads an integer beyond 64 bits as a float: 1e+29 may be a long id.
        raise RowError(
            f"{field} must be a string, got the number {shown(value)} "
            "(write numbers with a fraction or more than 19 digits as strings)"
        )
    if isinstance(value, int) and abs(value) >= 10**max_length:
        # Checked before str(), which Python refuses for ints past 4300 digits.
        raise RowError(f"{field} is longer than {max_length} characters")
    result = str(value).strip()
    if len(result) > max_length:
        raise RowError(f"{field} is longer than {max_length} characters")
    storable(result, field)
    return result


def storable(value: str, field: str) -> str:
    """A string both databases can store: no NUL, nothing that is not valid Unicode."""
    problem = _text_problem(value)
    if problem is not None:
        raise RowError(f"{field} {problem}")
    return value


def _text_problem(value: str) -> str | None:
    # PostgreSQL refuses U+0000 in text and JSONB (one such row would abort the whole
    # COPY batch); a lone surrogate (a CSV cell's JSON may hold "\ud800") cannot be
    # encoded as UTF-8 by either driver.
    if "\x00" in value:
        return "contains a NUL character (U+0000), which cannot be stored"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains invalid Unicode (a lone surrogate)"
    return None


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
    raise RowError(f"{field} must be true/false, 1/0 or yes/no, got {shown(value)}")


def amount(value: Any, field: str = "amount") -> Decimal:
    """A money amount >= 0 with at most 2 decimals, within the range of the Money column."""
    number = _decimal(value, field)
    if not number.is_finite():
        raise RowError(f"{field} is not a finite number: {shown(value)}")
    if number < 0:
        raise RowError(f"{field} must not be negative, got {_plain(value)}")
    # Before quantize: a value this large has more digits than the decimal context
    # holds, and quantize would raise InvalidOperation instead of saying why.
    if number > MAX_AMOUNT:
        raise RowError(f"{field} {shown(value)} is out of range (at most {MAX_AMOUNT})")
    rounded = number.quantize(_CENT)
    if rounded != number:
        raise RowError(f"{field} has more than 2 decimals: {_plain(value)}")
    # abs(): "-0" is zero, stored and hashed as 0.00 rather than -0.00.
    return abs(rounded)


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RowError(f"{field} must be a number, got {_json_kind(value)}")
    if isinstance(value, int):
        return Decimal(value)  # exact, and no str() of a huge int
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        # Also an exponent beyond what Decimal represents, such as "1e9999999999999999999".
        raise RowError(f"{field} is not a number: {shown(value)}") from None


def currency(value: Any) -> str:
    code = text(value, "currency", 3).upper()
    if not _CURRENCY.match(code):
        raise RowError(f"currency must be a 3-letter ISO 4217 code, got {shown(value)}")
    return code


def country(value: Any) -> str:
    code = text(value, "country", 8).upper()
    if code not in _countries():
        raise RowError(
            f"country must be an ISO 3166 alpha-2 code such as CN or US, got {shown(value)}"
        )
    return code


def timezone(value: Any) -> str:
    name = text(value, "timezone", 64)
    if _zone(name) is None:
        raise RowError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)")
    return name


def locale(value: Any) -> str:
    tag = text(value, "locale", 16)
    if not _LOCALE.match(tag):
        raise RowError(f"locale must look like zh-CN or en, got {shown(value)}")
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
        raise RowError(f"{field} is not an ISO 8601 time: {shown(value)}") from None
    try:
        return wall_to_utc(parsed, shop_zone)
    except NonexistentTimeError:
        raise RowError(
            f"{field} {shown(value)} does not exist in {shop_zone.key} "
            "(clocks jump forward at that hour); give the time with its UTC offset"
        ) from None
    except OverflowError:
        # 9999-12-31T23:00-05:00 or 0001-01-01 in a zone east of UTC: no such UTC instant.
        raise RowError(f"{field} {shown(value)} is out of range in UTC (years 1 to 9999)") from None


def json_document(value: dict[str, Any], field: str) -> dict[str, Any]:
    """A JSON object (attributes, properties) that both databases store as given.

    Checked: keys and strings are storable text; integers fit in 64 bits (SQLite's
    JSON and orjson stop there); numbers are finite (NaN and Infinity are not JSON:
    orjson would write them as null, SQLite's JSON functions refuse them); nesting
    stays within MAX_JSON_DEPTH. A CSV cell's JSON (json.loads) can hold all of these.
    """
    try:
        _check_json(value, 0)
    except _JsonProblem as problem:
        where = field + "".join(reversed(problem.path))
        raise RowError(f"{where}: {problem.reason}") from None
    return value


# Far deeper than any shop export, and well under orjson's limit of 255 levels.
MAX_JSON_DEPTH = 32
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _JsonProblem(Exception):
    """What is wrong, and where: the path is collected on the way up (cheap when valid)."""

    def __init__(self, reason: str):
        self.reason = reason
        self.path: list[str] = []


def _check_json(value: Any, depth: int) -> None:
    kind = value.__class__
    if kind is str:
        problem = _text_problem(value)
        if problem is not None:
            raise _JsonProblem(problem)
    elif value is None or kind is bool:
        pass
    elif kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _JsonProblem("integers must fit in 64 bits (write longer ones as strings)")
    elif kind is float:
        if not math.isfinite(value):
            raise _JsonProblem(f"numbers must be finite, got {value}")
    elif kind is dict or kind is list:
        if depth >= MAX_JSON_DEPTH:
            raise _JsonProblem(f"nested more than {MAX_JSON_DEPTH} levels deep")
        items = enumerate(value) if kind is list else value.items()
        for key, item in items:
            if kind is dict:
                _check_key(key)
            try:
                _check_json(item, depth + 1)
            except _JsonProblem as problem:
                problem.path.append(f"[{key}]" if kind is list else f".{_key(key)}")
                raise
    else:
        raise _JsonProblem(f"{kind.__name__} is not a JSON value")


def _check_key(key: Any) -> None:
    if key.__class__ is not str:
        raise _JsonProblem(f"keys must be strings, got {shown(key)}")
    problem = _text_problem(key)
    if problem is not None:
        raise _JsonProblem(f"key {shown(key)} {problem}")


def _key(key: str) -> str:
    """A key as reject reasons show it inside a path: as is when plainly printable."""
    return key if len(key) <= 40 and key.isprintable() else shown(key)


def shown(value: Any) -> str:
    """A value as a reject reason quotes it: repr, cut to a readable length.

    Objects and lists are named, not printed, and a huge integer is never converted
    to text (Python refuses str() of ints past 4300 digits).
    """
    if isinstance(value, dict | list):
        return _json_kind(value)
    if isinstance(value, int) and value.bit_length() > 200:
        return "an integer of more than 60 digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> str:
    """Like `shown`, without quotes for strings: `got -5`, `12.345`."""
    return value.strip()[:60] if isinstance(value, str) else shown(value)


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
    return zone_named(name)


@lru_cache(maxsize=1)
def _countries() -> frozenset[str]:
    # Babel's territory list: two letters are countries, three digits are regions;
    # ZZ (unknown), EU, EZ, UN and QO (groupings) are not countries.
    pseudo = {"ZZ", "EU", "EZ", "UN", "QO"}
    return frozenset(c for c in Locale("en").territories if len(c) == 2 and c not in pseudo)
