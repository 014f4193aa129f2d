"""`nudge preview`: every surface of one creative for one user, written to files.

Landing page and email go to .html files (open them in a browser), the email
subject and SMS to .txt, the ad fields to ads.txt with each width against its limit.
The returned rows are the summary table the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.config import Settings
from engine.creatives.context import build_context
from engine.creatives.errors import TemplateProblemError
from engine.creatives.loader import AD_PREFIX, choose_locale, open_creative
from engine.creatives.render import RenderedSurface, Skipped, available_surfaces, render_creative
from engine.creatives.samples import SAMPLE_BASE_URL, SAMPLE_OFFER, sample_offer, sample_users
from engine.creatives.width import sms_segments
from engine.errors import Diagnostic, NotFoundError

OUTPUT_FILES = {
    "email_subject": "email_subject.txt",
    "email_html": "email.html",
    "email_text": "email.txt",
    "sms": "sms.txt",
    "landing": "landing.html",
}
ADS_OUTPUT = "ads.txt"


@dataclass(frozen=True, slots=True)
class PreviewRow:
    surface: str
    file: str
    size: str
    status: str


@dataclass
class PreviewResult:
    creative: str
    locale: str
    out: Path
    rows: list[PreviewRow] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def load_user(settings: Settings, user_id: str) -> dict[str, Any]:
    """One user row with its profile, from the store (for previews with --user)."""
    from engine.store import open_store
    from engine.store.people import Profile, User

    users, profiles = User.__table__, Profile.__table__
    store = open_store(settings)
    try:
        with store.connect() as connection:
            row = connection.execute(sa.select(users).where(users.c.id == user_id)).mappings()
            user = row.first()
            if user is None:
                raise NotFoundError(f"no user {user_id!r} in the store")
            found = connection.execute(
                sa.select(profiles).where(profiles.c.user_id == user_id)
            ).mappings()
            profile = found.first()
    finally:
        store.dispose()
    return {**dict(user), "profile": dict(profile) if profile else {}}


def preview_creative(
    settings: Settings,
    creative: str,
    *,
    out: Path,
    now: datetime,
    user: dict[str, Any] | None = None,
    offer: dict[str, Any] | None = None,
    rule_id: str = "preview",
    variant: str | None = None,
    surface: str | None = None,
    locale: str | None = None,
    base_url: str = SAMPLE_BASE_URL,
    secret: bytes | None = None,
) -> PreviewResult:
    """Render every surface (or one) of `creative` into files under `out`."""
    found = open_creative(settings, creative)
    wanted = locale or (user or {}).get("locale") or settings.shop.locale
    chosen = choose_locale(wanted, found.locales, settings.shop.locale)
    if user is None:
        user = sample_users(chosen)[0]
    user = {**user, "locale": locale or user.get("locale") or chosen}
    context = build_context(
        user,
        sample_offer(offer, settings.shop.currency),
        rule_id=rule_id,
        variant=variant,
        settings=settings,
        base_url=base_url,
        secret=secret,
        now=now,
    )
    surfaces = available_surfaces(settings, creative, chosen)
    if surface is not None:
        if surface not in surfaces:
            known = ", ".join(surfaces)
            raise NotFoundError(f"creative {creative!r} has no surface {surface!r} ({known})")
        surfaces = [surface]
    out.mkdir(parents=True, exist_ok=True)
    result = PreviewResult(creative=creative, locale=chosen, out=out)
    ad_lines: list[str] = []
    for name in surfaces:
        file = ADS_OUTPUT if name.startswith(AD_PREFIX) else OUTPUT_FILES[name]
        try:
            rendered = render_creative(settings, creative, name, context)
        except TemplateProblemError as exc:
            result.diagnostics += exc.diagnostics
            result.rows.append(PreviewRow(name, "", "", "error"))
            continue
        if isinstance(rendered, Skipped):
            result.rows.append(PreviewRow(name, "", "", f"skipped: {rendered.reason}"))
            continue
        size, status = _measure(rendered)
        if name.startswith(AD_PREFIX):
            ad_lines.append(f"{name}  [{size}]  {status}\n  {rendered.text}\n  -> {rendered.url}\n")
        else:
            text = rendered.text
            if name == "sms":
                text += f"\n--- {size}\n"
            (out / file).write_text(text, encoding="utf-8")
        result.rows.append(PreviewRow(name, str(out / file), size, status))
    if ad_lines:
        (out / ADS_OUTPUT).write_text("\n".join(ad_lines), encoding="utf-8")
    return result


def run_preview(
    settings: Settings,
    creative: str,
    *,
    out: Path,
    now: datetime,
    user_id: str | None = None,
    rule_id: str | None = None,
    variant: str | None = None,
    offer: dict[str, Any] | None = None,
    surface: str | None = None,
    locale: str | None = None,
    secret: bytes | None = None,
) -> PreviewResult:
    """`nudge preview`: the user from the store, the offer from the rule (or `offer`)."""
    from engine.creatives.uses import use_of_rule

    user = load_user(settings, user_id) if user_id else None
    rule_offer: dict[str, Any] | None = None
    if rule_id:
        use = use_of_rule(settings, rule_id, variant)
        variant = use.variant
        rule_offer = dict(use.offer)
    if offer:
        # --offer amends the rule's offer, or the sample offer when no rule is named.
        rule_offer = {**(rule_offer if rule_offer is not None else SAMPLE_OFFER), **offer}
    return preview_creative(
        settings,
        creative,
        out=out,
        now=now,
        user=user,
        offer=rule_offer,
        rule_id=rule_id or "preview",
        variant=variant,
        surface=surface,
        locale=locale,
        secret=secret,
    )


def _measure(rendered: RenderedSurface) -> tuple[str, str]:
    limit = rendered.limit
    if limit is not None:
        over = rendered.width > limit.max_width
        status = f"over limit ({limit.severity})" if over else "ok"
        return f"{rendered.width}/{limit.max_width}", status
    if rendered.surface == "sms":
        parts, encoding = sms_segments(rendered.text)
        return f"{len(rendered.text)} chars, {parts} part(s) {encoding}", "ok"
    return f"{len(rendered.text)} chars", "ok"
