"""The rendering context: what a template may see about one user and one offer.

Only safe fields of the user reach templates (name, locale, tier, country, time
zone; never raw email or phone, which must not leak into ad copy or URLs). The offer
is normalised so that every fact a template may print always exists (None when the
rule's coupon does not set it): with StrictUndefined a missing key would otherwise fail
at send time for some users only. A message without any coupon gets `NoOffer` facts:
false in `{% if offer.code %}`, so a creative that shows no offer renders, but printing
one skips the message (and is an error of `nudge check`) instead of showing a blank.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from engine import durations
from engine.clock import ensure_aware
from engine.config import Settings
from engine.creatives.errors import OfferFactMissing
from engine.creatives.links import sign_token
from engine.localtime import day_end, first_instant_at_or_after, zone_named
from engine.store.profiles import PROFILE_COLUMNS

SAFE_USER_FIELDS = ("name", "first_name", "locale", "member_tier", "country", "timezone")
OFFER_FACTS = ("value", "currency", "percent_off", "min_order", "expires_at", "code")
# What a coupon states; `currency` is not one of them (it defaults to the shop's, and
# `money` formats any amount with it).
COUPON_FACTS = ("value", "percent_off", "min_order", "expires_at", "code")


class NoOffer:
    """An offer fact of a message that has no coupon.

    False in a test (`{% if offer.code %}` skips the block) and equal to None, but
    printing it, formatting it (`money`, `date`...), comparing or computing with it
    raises `OfferFactMissing`, which skips the message with the reason recorded.
    """

    __slots__ = ("fact",)

    def __init__(self, fact: str):
        self.fact = fact

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or (isinstance(other, NoOffer) and other.fact == self.fact)

    def __hash__(self) -> int:
        return hash(None)

    def __repr__(self) -> str:
        return f"NoOffer({self.fact!r})"

    def _shown(self, *args: Any) -> Any:
        raise OfferFactMissing(self.fact)

    __str__ = __html__ = __format__ = __int__ = __float__ = __iter__ = __len__ = _shown
    __lt__ = __le__ = __gt__ = __ge__ = __neg__ = _shown
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _shown
    __truediv__ = __rtruediv__ = _shown


def has_coupon(offer: Mapping[str, Any]) -> bool:
    """Whether an offer (a rule's coupon parameters, or an issued coupon) is a coupon."""
    return any(offer.get(key) not in (None, "") for key in ("value", "percent_off", "code"))


def plain_offer(offer: Mapping[str, Any]) -> dict[str, Any]:
    """The offer with `NoOffer` facts as None, for code that reads facts (not templates)."""
    return {key: None if isinstance(value, NoOffer) else value for key, value in offer.items()}


def parse_duration(value: Any) -> timedelta:
    """`14d`, `12h`, `2w`, `30m`: the rule files' duration syntax (engine/durations.py)."""
    if isinstance(value, timedelta):
        return value
    return durations.parse_duration(str(value))


def _decimal(value: Any, key: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"offer {key}: not a number: {value!r}") from None


def _instant(value: Any, tz: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return ensure_aware(value)
    if isinstance(value, date):
        # An offer "until 2026-11-11" lasts to the end of that day in the shop's zone.
        return day_end(value, tz) - timedelta(seconds=1)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else first_instant_at_or_after(parsed, tz)


def normalize_offer(offer: Mapping[str, Any], *, now: datetime, settings: Settings) -> dict:
    """Offer facts with every key present; `expires_in` becomes `expires_at` from `now`.

    Without a coupon every fact but the currency is `NoOffer` (see the module doc).
    """
    result: dict[str, Any] = {key: None for key in OFFER_FACTS}
    result["currency"] = settings.shop.currency
    if not has_coupon(offer):
        result.update({key: NoOffer(key) for key in COUPON_FACTS})
    for key, value in offer.items():
        if key in ("value", "min_order", "percent_off"):
            result[key] = _decimal(value, key)
        elif key == "expires_in":
            result["expires_at"] = now + parse_duration(value)
        elif key == "expires_at":
            result["expires_at"] = None if value is None else _instant(value, settings.tz)
        elif key == "currency":
            result["currency"] = str(value or settings.shop.currency).upper()
        else:
            result[key] = value
    return result


def _zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    return (zone_named(name) if name else None) or default


def _is_cjk(text: str) -> bool:
    return any(unicodedata.east_asian_width(char) in ("W", "F") for char in text)


def first_name_of(name: str | None) -> str | None:
    """Latin names: the first word. CJK names have no spaces; the whole name is kept."""
    if not name:
        return None
    name = name.strip()
    return name if _is_cjk(name) else name.split()[0]


def build_context(
    user: Mapping[str, Any],
    offer: Mapping[str, Any],
    *,
    rule_id: str,
    variant: str | None,
    settings: Settings,
    base_url: str,
    secret: bytes | None,
    now: datetime,
) -> dict[str, Any]:
    """Everything a template may use for one user, one offer, one rule and variant.

    `user` is a users-table row (plus optional `profile` mapping or profile columns);
    `secret` signs the per-user token in links (NUDGE_SECRET_KEY, read by the caller);
    without a secret, links carry no token (previews, the static landing site).
    """
    now = ensure_aware(now)
    safe = {key: user.get(key) for key in SAFE_USER_FIELDS}
    safe["first_name"] = safe["first_name"] or first_name_of(safe["name"])
    zone = _zone(safe["timezone"], settings.tz)
    safe["timezone"] = zone.key
    profile_source = user.get("profile") or user
    profile = {key: profile_source.get(key) for key in PROFILE_COLUMNS}
    user_id = user.get("id")
    token = None
    if secret and user_id:
        expires_at = now + timedelta(days=settings.serve.link_days)
        token = sign_token(secret, str(user_id), rule_id, expires_at=expires_at)
    return {
        "user": safe,
        "profile": profile,
        "offer": normalize_offer(offer, now=now, settings=settings),
        "rule_id": rule_id,
        "variant": variant,
        "shop": {"name": settings.shop.name, "currency": settings.shop.currency},
        "now": now.astimezone(UTC),
        "tz": zone,
        "token": token,
        "base_url": base_url.rstrip("/"),
    }
