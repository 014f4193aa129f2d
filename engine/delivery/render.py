"""Rendering the surfaces of a creative for one delivery (engine.creatives does the work).

A broken or missing template makes the action dead with the located error (fix the
template, then `nudge retry`); a template that calls abort("reason") skips the
action with that reason. Neither ever sends half a message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from engine.creatives import Skipped, build_context, render_creative
from engine.creatives.links import SERVE_SECRET_ENV, message_link_token
from engine.delivery.context import Contact, DeliveryContext, Outcome, PlannedAction
from engine.errors import NudgeError

OFFER_KEYS = ("code", "value", "percent_off", "currency", "min_order", "expires_at")
# Surfaces whose links are tracked; ads and landing pages link on their own.
TRACKED_SURFACES = ("email_subject", "email_text", "email_html", "sms")


def offer_of(coupon: dict[str, Any] | None) -> dict[str, Any]:
    return {key: coupon[key] for key in OFFER_KEYS} if coupon else {}


def render_surfaces(
    ctx: DeliveryContext,
    action: PlannedAction,
    contact: Contact,
    creative: str,
    surfaces: tuple[str, ...],
    *,
    coupon: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, str] | Outcome:
    """{surface: text} for every surface, or the Outcome that stops this action."""
    secret = os.environ.get("NUDGE_SECRET_KEY")
    context = build_context(
        {
            "id": contact.id,
            "name": contact.name,
            "locale": contact.locale,
            "member_tier": contact.member_tier,
            "country": contact.country,
            "timezone": contact.timezone,
        },
        offer_of(coupon),
        rule_id=action.rule_id,
        variant=action.variant,
        settings=ctx.settings,
        base_url=ctx.config.base_url,
        secret=secret.encode() if secret else None,
        now=ctx.now,
    )
    context.update(extra or {})
    wrap_link = tracked_links(ctx, action)
    texts: dict[str, str] = {}
    # What the surfaces share (files, locale, the blocks module), per link wrapping.
    shared: dict[bool, dict] = {True: {}, False: {}}
    for surface in surfaces:
        wrap = wrap_link if surface in TRACKED_SURFACES else None
        try:
            rendered = render_creative(
                ctx.settings,
                creative,
                surface,
                context,
                wrap_link=wrap,
                message=shared[wrap is None],
            )
        except NudgeError as exc:
            return Outcome.dead("render_failed", str(exc))
        if isinstance(rendered, Skipped):
            return Outcome.skipped(f"template: {rendered.reason}"[:64])
        texts[surface] = rendered.text
    return texts


def tracked_links(ctx: DeliveryContext, action: PlannedAction) -> Callable[[str, str], str] | None:
    """The click-tracking link maker of one action, or None when `nudge serve` is not
    configured (no `[serve] base_url` or no NUDGE_SERVE_SECRET): links then go straight
    to their target."""
    server = ctx.settings.serve.base_url
    secret = os.environ.get(SERVE_SECRET_ENV)
    if not server or not secret:
        return None
    expires_at = ctx.now + timedelta(days=ctx.settings.serve.link_days)

    def wrap(link: str, url: str) -> str:
        token = message_link_token(secret.encode(), action.id, link, expires_at=expires_at)
        return f"{server}/c/{token}"

    return wrap
