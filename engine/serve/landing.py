"""`GET /l/<rule>/<variant>`: a rule's landing creative, live, for one visitor.

The page is rendered by `render_creative` exactly as `nudge landing build` renders
it, in the visitor's locale (Accept-Language, else the shop's). A valid per-user
token `?t=` (engine/creatives/links.py, signed with NUDGE_SECRET_KEY like the links
in emails and SMS) personalises it: the user's name, their own coupon of this rule
(unvoided, unredeemed, unexpired) with its expiry, and records a `landing_view`
event with the UTM parameters and click ids of the URL. Anything else (no token, a
forged one, another rule's, an unknown user) gets the generic page of the rule's
offer, without a code, and records nothing.

The variant path segment is the slug of the rule's variant, `default` for a rule
without variants (the same segment as the static site's file names).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.creatives.context import build_context
from engine.creatives.landing import landing_targets
from engine.creatives.links import TOKEN_PARAM, UTM_KEYS, slug, verify_token
from engine.creatives.render import RenderedSurface, render_creative
from engine.creatives.uses import CreativeUse
from engine.serve.events import CLICK_IDS, dedup_id, record_event
from engine.store.database import Store
from engine.store.delivery import Coupon
from engine.store.people import User

coupons = Coupon.__table__
users = User.__table__
COUPON_FACTS = ("code", "value", "percent_off", "currency", "min_order", "expires_at")
USER_FIELDS = ("id", "name", "locale", "member_tier", "country", "timezone")
_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


def variant_segment(variant: str | None) -> str:
    return slug(variant) if variant else "default"


def landing_index(store: Store) -> dict[tuple[str, str], tuple[CreativeUse, list[str]]]:
    """(rule, variant segment) -> (the use, the locales of its landing template)."""
    from engine.creatives.uses import creative_uses_from_rules

    index: dict[tuple[str, str], tuple[CreativeUse, list[str]]] = {}
    uses = creative_uses_from_rules(store.settings)
    for name, use, locale, sampled in landing_targets(store.settings, uses):
        key = (use.rule_id, variant_segment(use.variant))
        # A creative no rule uses has no live page (its sample page is the static site's).
        if sampled or (key in index and index[key][0].creative != name):
            continue
        index.setdefault(key, (use, []))[1].append(locale)
    return index


def use_for_site_path(
    pages: dict[tuple[str, str], tuple[CreativeUse, list[str]]],
    creative: str,
    variant: str,
    campaign: str | None,
) -> tuple[CreativeUse, list[str]] | None:
    """The page of a static-site path `<creative>/<locale>/<variant>.html` (the links of
    rendered messages): the rule is the one `utm_campaign` names, or the only rule
    using that creative and variant."""
    matches = [
        found
        for (_, segment), found in pages.items()
        if found[0].creative == creative and segment == variant
    ]
    named = [found for found in matches if campaign and slug(found[0].rule_id) == campaign]
    if named:
        return named[0]
    return matches[0] if len(matches) == 1 else None


def accepted_languages(header: str | None) -> list[str]:
    """Language tags of an Accept-Language header, best first (q=0 and * left out)."""
    weighted = []
    for position, part in enumerate((header or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and _TAG.match(tag) and quality > 0:
            weighted.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def visitor_locale(header: str | None, locales: list[str]) -> str | None:
    """The first accepted language the creative has a landing page in (same language
    counts: en-US reads the `en` page), or None for the shop's."""
    languages = {locale.split("-")[0].lower() for locale in locales}
    for tag in accepted_languages(header):
        if tag.split("-")[0].lower() in languages:
            return tag
    return None


def user_row(connection, user_id: str) -> dict[str, Any] | None:
    columns = [users.c[name] for name in USER_FIELDS]
    row = connection.execute(sa.select(*columns).where(users.c.id == user_id)).first()
    return dict(row._mapping) if row else None


def _coupon(connection, user_id: str, rule_id: str, now: datetime) -> dict[str, Any] | None:
    """The user's latest live coupon of this rule."""
    query = (
        sa.select(*(coupons.c[name] for name in COUPON_FACTS))
        .where(
            coupons.c.user_id == user_id,
            coupons.c.rule_id == rule_id,
            coupons.c.voided_at.is_(None),
            coupons.c.redeemed_at.is_(None),
            coupons.c.expires_at > now,
        )
        .order_by(coupons.c.issued_at.desc(), coupons.c.id.desc())
        .limit(1)
    )
    row = connection.execute(query).first()
    return dict(row._mapping) if row else None


def attribution(query: dict[str, str]) -> dict[str, str]:
    """The UTM parameters and ad click ids of a URL, cut to the events table's sizes."""
    found = {}
    for key in (*UTM_KEYS, "utm_term", *CLICK_IDS):
        value = "".join(ch for ch in query.get(key, "") if ch.isprintable()).strip()
        if value:
            found[key] = value[:128]
    return found


def generic_offer(use: CreativeUse) -> dict[str, Any]:
    # The rule's offer without any code: a code is one user's, never shown to all.
    return {key: value for key, value in use.offer.items() if key != "code"}


def render_landing(
    store: Store,
    use: CreativeUse,
    *,
    query: dict[str, str],
    accept_language: str | None,
    locales: list[str],
    base_url: str,
    landing_secret: bytes | None,
    now: datetime,
) -> tuple[str, str | None]:
    """(page HTML, the user id the page was personalised for, or None)."""
    token = query.get(TOKEN_PARAM)
    user_id = (
        verify_token(landing_secret, token, use.rule_id, now=now)
        if token and landing_secret
        else None
    )
    user: dict[str, Any] | None = None
    offer = generic_offer(use)
    if user_id is not None:
        with store.read() as connection:
            user = user_row(connection, user_id)
            coupon = _coupon(connection, user_id, use.rule_id, now) if user else None
        if user is not None and coupon is not None:
            offer = coupon
    locale = visitor_locale(accept_language, locales)
    if user is None:
        visitor: dict[str, Any] = {"locale": locale}
    else:
        visitor = {**user, "locale": locale or user.get("locale")}
    context = build_context(
        visitor,
        offer,
        rule_id=use.rule_id,
        variant=use.variant,
        settings=store.settings,
        base_url=base_url,
        secret=landing_secret if user is not None else None,
        now=now,
    )
    rendered = render_creative(store.settings, use.creative, "landing", context)
    if not isinstance(rendered, RenderedSurface):
        raise LookupError(f"landing page of {use.creative!r} aborted: {rendered.reason}")
    if user is not None:
        assert token is not None
        record = {
            "event_id": dedup_id("landing_view", token, now),
            "user_id": user["id"],
            "type": "landing_view",
            "at": now.isoformat(),
            "rule_id": use.rule_id,
            "variant": use.variant,
            "creative": use.creative,
            "locale": rendered.locale,
        }
        record.update(attribution(query))
        record_event(store, record, now=now)
    return rendered.text, user["id"] if user else None
