"""Row validation: one input record (a dict of column -> value) -> one stored row.

`user_row`, `event_row` and `spend_row` either return the row to write or raise
`RowError` with the reject reason. CSV cells arrive as strings and JSON values as JSON
types; both go through the same parsers so that a CSV and a JSONL export of the same
data store the same rows (and, for events, the same content hash).
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from engine.ingest import values
from engine.ingest.money import ShopCurrency
from engine.ingest.values import RowError
from engine.store.marketing import AdSpend
from engine.store.people import Event, User

# Maximum lengths come from the tables, so a value that would fail on PostgreSQL's
# VARCHAR(n) (and abort the whole batch) is a reject of its row instead.
_USER_LENGTHS = {c.name: c.type.length for c in User.__table__.c if getattr(c.type, "length", None)}
_EVENT_LENGTHS = {
    c.name: c.type.length for c in Event.__table__.c if getattr(c.type, "length", None)
}
_SPEND_LENGTHS = {
    c.name: c.type.length for c in AdSpend.__table__.c if getattr(c.type, "length", None)
}
TAG_LENGTH = 64

USER_TEXT_FIELDS = ("email", "phone", "name", "member_tier")
CONSENT_FIELDS = ("email_opt_in", "sms_opt_in", "ads_opt_in")
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
EVENT_TEXT_FIELDS = ("order_id", "coupon_code", *UTM_FIELDS)
# Aliases in order of preference: the first one given wins.
EVENT_USER_KEYS = ("user", "user_id")
EVENT_TIME_KEYS = ("at", "occurred_at", "time")
EVENT_ID_KEYS = ("event_id", "id")
AMOUNT_REQUIRED = frozenset({"purchase", "refund"})

USER_KEYS = frozenset(
    {
        "id",
        *USER_TEXT_FIELDS,
        "country",
        "timezone",
        "locale",
        "member_since",
        "tags",
        "attributes",
        *CONSENT_FIELDS,
        "unsubscribed_at",
    }
)
EVENT_KEYS = frozenset(
    {
        *EVENT_USER_KEYS,
        "type",
        *EVENT_TIME_KEYS,
        *EVENT_ID_KEYS,
        "amount",
        "currency",
        *EVENT_TEXT_FIELDS,
        "properties",
    }
)

# Spend files: every column is named here; any other one is an error (a misspelt
# `campaign` would otherwise merge campaigns into one replaced row).
SPEND_KEYS = ("date", "channel", "campaign", "cost", "currency")
SPEND_REQUIRED = ("date", "channel", "cost")


def is_blank(value: Any) -> bool:
    """Blank means "not given": an empty CSV cell, a JSON null or an empty string."""
    return value is None or (isinstance(value, str) and not value.strip())


def user_row(record: Mapping[str, Any], shop_zone: ZoneInfo) -> dict[str, Any]:
    """Validate a users record. Keys that are not given stay None (= keep stored value)."""
    row: dict[str, Any] = dict.fromkeys(
        ("id", *USER_TEXT_FIELDS, "country", "timezone", "locale", "member_since"), None
    )
    row.update(dict.fromkeys((*CONSENT_FIELDS, "unsubscribed_at", "attributes", "tags"), None))
    attributes: dict[str, Any] = {}
    for key, value in record.items():
        if is_blank(value):
            continue
        if key == "id":
            row["id"] = values.text(value, "id", _USER_LENGTHS["id"])
        elif key in USER_TEXT_FIELDS:
            row[key] = values.text(value, key, _USER_LENGTHS[key])
        elif key == "country":
            row["country"] = values.country(value)
        elif key == "timezone":
            row["timezone"] = values.timezone(value)
        elif key == "locale":
            row["locale"] = values.locale(value)
        elif key in ("member_since", "unsubscribed_at"):
            row[key] = values.instant(value, key, shop_zone)
        elif key in CONSENT_FIELDS:
            row[key] = values.boolean(value, key)
        elif key == "tags":
            row["tags"] = _tags(value)
        elif key == "attributes":
            attributes.update(_json_object(value, "attributes"))
        elif key.startswith("attributes."):
            attributes[key.removeprefix("attributes.")] = value
        else:
            # Unknown columns are kept as attributes rather than rejected: shops export
            # whatever their platform has, and rules can read attributes.
            attributes[key] = value
    if not row["id"]:
        raise RowError("missing required field 'id'")
    if attributes:
        row["attributes"] = values.json_document(attributes, "attributes")
    return row


# Where each known key of an events record goes (see `event_row`); aliases in order
# of preference: the first one given wins.
_EVENT_SLOTS = {
    key: slot
    for slot, key in enumerate(
        (
            *EVENT_USER_KEYS,
            "type",
            *EVENT_TIME_KEYS,
            *EVENT_ID_KEYS,
            "amount",
            "currency",
            "properties",
            *EVENT_TEXT_FIELDS,
        )
    )
}
_TYPE, _AMOUNT, _CURRENCY, _PROPERTIES = 2, 8, 9, 10
_SLOT_COUNT = len(_EVENT_SLOTS)
# event_row reads the aliases by position, in their order of preference.
_ALIAS_SLOTS = tuple(
    _EVENT_SLOTS[key] for key in (*EVENT_USER_KEYS, *EVENT_TIME_KEYS, *EVENT_ID_KEYS)
)
assert _ALIAS_SLOTS == (0, 1, 3, 4, 5, 6, 7), _ALIAS_SLOTS
_TEXT_SLOTS = tuple(
    (field, _EVENT_SLOTS[field], _EVENT_LENGTHS[field]) for field in EVENT_TEXT_FIELDS
)
_USER_LENGTH, _TYPE_LENGTH = _EVENT_LENGTHS["user_id"], _EVENT_LENGTHS["type"]


def event_row(
    record: Mapping[str, Any], shop_zone: ZoneInfo, shop_currency: ShopCurrency
) -> dict[str, Any]:
    """Validate an events record into the columns of the events table (less ids).

    An amount is stored in the shop currency (engine/ingest/money.py); one in another
    currency keeps what was sent in original_amount / original_currency.
    This is the hot path of a million-row import: one pass over the record's items,
    each known key put in its slot by one dict lookup, the rest kept as properties.
    """
    given: list[Any] = [None] * _SLOT_COUNT
    extra: list[tuple[str, Any]] = []
    slot_of = _EVENT_SLOTS.get
    for key, value in record.items():
        # Blank means "not given" (is_blank): None, or a string of whitespace only.
        if value is None or (value.__class__ is str and (not value or value.isspace())):
            continue
        slot = slot_of(key)
        if slot is None:
            extra.append((key, value))
        else:
            given[slot] = value
    # Aliases by position, the first one given wins: user, user_id (0, 1); at,
    # occurred_at, time (3 to 5); event_id, id (6, 7).
    user_id = given[0] if given[0] is not None else given[1]
    if user_id is None:
        raise RowError("missing required field 'user'")
    user_id = _text(user_id, "user", _USER_LENGTH)
    event_type = given[_TYPE]
    if event_type is None:
        raise RowError("missing required field 'type'")
    event_type = _text(event_type, "type", _TYPE_LENGTH)
    at = given[3] if given[3] is not None else given[4] if given[4] is not None else given[5]
    if at is None:
        raise RowError("missing required field 'at'")
    occurred_at = _utc_instant(at, shop_zone)
    explicit_id = given[6] if given[6] is not None else given[7]
    raw_amount = given[_AMOUNT]
    raw_currency = given[_CURRENCY]
    currency = values.currency(raw_currency) if raw_currency is not None else None
    row: dict[str, Any] = {
        "user_id": user_id,
        "type": event_type,
        "occurred_at": occurred_at,
        "amount": None,
        "currency": currency,
        "original_amount": None,
        "original_currency": None,
    }
    if raw_amount is not None:
        _set_amount(row, values.amount(raw_amount), currency, shop_currency)
    elif event_type in AMOUNT_REQUIRED:
        raise RowError(f"missing required field 'amount' for a {event_type} event")
    for field, slot, max_length in _TEXT_SLOTS:
        value = given[slot]
        row[field] = None if value is None else _text(value, field, max_length)
    properties: dict[str, Any] = {}
    if given[_PROPERTIES] is not None:
        properties.update(_json_object(given[_PROPERTIES], "properties"))
    for key, value in extra:
        # Any other key is a free property (CSV: `properties.x` or a bare column name).
        properties[key.removeprefix("properties.")] = value
    row["properties"] = values.json_document(properties, "properties") if properties else {}
    if explicit_id is not None:
        row["source_id"] = _text(explicit_id, "event_id", _EVENT_LENGTHS["source_id"])
    else:
        row["source_id"] = content_hash(row)
    return row


def _utc_instant(value: Any, shop_zone: ZoneInfo) -> datetime:
    """values.instant, with the common case inline: a string with its UTC offset."""
    if value.__class__ is str:
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # values.instant says why (or accepts it with spaces around)
    return values.instant(value, "at", shop_zone)


def _set_amount(
    row: dict[str, Any], amount: Decimal, currency: str | None, shop_currency: ShopCurrency
) -> None:
    """An amount without a currency is in the shop currency; any other is converted."""
    if currency is None or currency == shop_currency.code:
        row["amount"], row["currency"] = amount, shop_currency.code
        return
    row["amount"] = shop_currency.convert(amount, currency)
    row["currency"] = shop_currency.code
    row["original_amount"], row["original_currency"] = amount, currency


_HASHED_TEXTS = itemgetter(*EVENT_TEXT_FIELDS)
# base64url of 16 bytes: 22 characters, then the "==" padding that is not kept.
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def content_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of the normalised event, so a row re-imported from any file is stored once.

    Normalised values (UTC time, two-decimal amount) make `12.5` and `"12.50"`, or the
    same instant written with different offsets, the same event. The amount hashed is
    the one the shop sent: a changed exchange rate must not store a purchase twice.
    The hash of an event must never change (a re-import would store it twice): the
    bytes hashed and the encoding are pinned by tests/ingest/test_events.py.
    """
    sent = row["original_currency"] is not None
    amount = row["original_amount"] if sent else row["amount"]
    canonical = [
        row["user_id"],
        row["type"],
        row["occurred_at"],  # UTC; orjson writes it as RFC 3339
        None if amount is None else str(amount),
        row["original_currency"] if sent else row["currency"],
        *_HASHED_TEXTS(row),
        row["properties"],
    ]
    encoded = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS, default=str)
    # 128 bits as 22 base64url characters: collision-free in practice and a third of
    # the hex digest's size in the (user_id, source_id) unique index.
    digest = hashlib.sha256(encoded).digest()[:16]
    return binascii.b2a_base64(digest, newline=False)[:22].translate(_URLSAFE).decode("ascii")


def _text(value: Any, field: str, max_length: int) -> str:
    # The common case inline: a short ASCII string without NUL needs no other check.
    if (
        value.__class__ is str
        and len(value) <= max_length
        and value.isascii()
        and "\x00" not in value
    ):
        return value.strip()
    return values.text(value, field, max_length)


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = value.split(";")
    elif isinstance(value, list):
        items = value
    else:
        raise RowError("tags must be a list or a ';'-separated string")
    tags: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise RowError(f"tags must be strings, got {values.shown(item)}")
        tag = values.storable(item.strip(), "a tag")
        if len(tag) > TAG_LENGTH:
            raise RowError(f"tag {tag[:20]!r}... is longer than {TAG_LENGTH} characters")
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def _json_object(value: Any, field: str) -> dict[str, Any]:
    if isinstance(value, str):  # a CSV cell holding a JSON object
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            # ValueError: malformed JSON, or an integer past Python's 4300 digits;
            # RecursionError: nesting deeper than the parser's stack.
            raise RowError(f"{field} is not a JSON object: {values.shown(value[:40])}") from None
    if not isinstance(value, dict):
        raise RowError(f"{field} must be a JSON object")
    return value


def spend_row(record: Mapping[str, Any], shop_currency: ShopCurrency) -> dict[str, Any]:
    """Validate an ad spend record: one campaign of one channel on one shop-local day.

    The cost is stored in the shop currency, converted like event amounts (a currency
    without a rate rejects the row); what the file said is kept in original_cost /
    original_currency. A blank campaign is stored as '' (the channel's spend not split
    by campaign).
    """
    unknown = [key for key in record if key not in SPEND_KEYS]
    if unknown:
        raise RowError(f"unknown field {unknown[0]!r}: spend rows have {', '.join(SPEND_KEYS)}")
    data = {key: value for key, value in record.items() if not is_blank(value)}
    for key in SPEND_REQUIRED:
        if key not in data:
            raise RowError(f"missing required field {key!r}")
    campaign = data.get("campaign", "")
    row: dict[str, Any] = {
        "date": _calendar_day(data["date"]),
        "channel": values.text(data["channel"], "channel", _SPEND_LENGTHS["channel"]),
        "campaign": values.text(campaign, "campaign", _SPEND_LENGTHS["campaign"]),
        "original_cost": None,
        "original_currency": None,
    }
    cost = values.amount(data["cost"], "cost")
    currency = values.currency(data["currency"]) if "currency" in data else None
    if currency is None or currency == shop_currency.code:
        row["cost"] = cost
    else:
        row["cost"] = shop_currency.convert(cost, currency)
        row["original_cost"], row["original_currency"] = cost, currency
    row["currency"] = shop_currency.code
    return row


def _calendar_day(value: Any) -> date:
    """A calendar day, YYYY-MM-DD: spend is reported per shop-local day, not per instant."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
    raise RowError(f"date must be a calendar day YYYY-MM-DD, got {values.shown(value)}")
