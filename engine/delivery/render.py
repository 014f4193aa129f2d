"""Rendering the surfaces of a creative for one delivery (engine.creatives does the work).

A broken or missing template makes the action dead with the located error (fix the
template, then `nudge retry`); a template that calls abort("reason") skips the
action with that reason. Neither ever sends half a message.
"""

from __future__ import annotations

import os
from typing import Any

from engine.creatives import Skipped, build_context, render_creative
from engine.delivery.context import Contact, DeliveryContext, Outcome, PlannedAction
from engine.errors import NudgeError

OFFER_KEYS = ("code", "value", "percent_off", "currency", "min_order", "expires_at")


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
    texts: dict[str, str] = {}
    for surface in surfaces:
        try:
            rendered = render_creative(ctx.settings, creative, surface, context)
        except NudgeError as exc:
            return Outcome.dead("render_failed", str(exc))
        if isinstance(rendered, Skipped):
            return Outcome.skipped(f"template: {rendered.reason}"[:64])
        texts[surface] = rendered.text
    return texts
