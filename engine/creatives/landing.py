"""`nudge landing build`: the landing pages of every creative, locale and variant.

A static site (one HTML file per page, inline CSS, no scripts) rendered for a sample
user with no personal data and no token, so it can be published as is. Paths follow
`render.landing_path` so the links in ads and messages point at these files.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from engine.config import Settings
from engine.creatives.context import build_context
from engine.creatives.loader import list_creatives, open_creative
from engine.creatives.render import RenderedSurface, landing_path, render_creative
from engine.creatives.samples import SAMPLE_BASE_URL, sample_offer
from engine.creatives.uses import CreativeUse, creative_uses_from_rules
from engine.errors import LocatedError


@dataclass(frozen=True, slots=True)
class LandingPage:
    creative: str
    locale: str
    variant: str | None
    rule_id: str
    path: Path


def _anonymous(locale: str) -> dict:
    # No name, no id: a published page must not carry anyone's personal data.
    return {"locale": locale}


def build_landing_site(
    settings: Settings,
    out: Path,
    *,
    now: datetime,
    uses: list[CreativeUse] | None = None,
    base_url: str = SAMPLE_BASE_URL,
) -> list[LandingPage]:
    """Write every landing page and an index.html into `out`; returns the pages.

    `uses` give the variants and their offers (default: read from the rules); a
    creative no rule uses is built once with the sample offer. Raises LocatedError
    if any page fails to render.
    """
    if uses is None:
        uses = creative_uses_from_rules(settings)
    pages: list[LandingPage] = []
    problems = []
    for name, use, locale, sampled in landing_targets(settings, uses):
        context = build_context(
            _anonymous(locale),
            # A rule without a coupon has no offer: never show an invented one.
            sample_offer(None if sampled else use.offer, settings.shop.currency),
            rule_id=use.rule_id,
            variant=use.variant,
            settings=settings,
            base_url=base_url,
            secret=None,
            now=now,
        )
        try:
            rendered = render_creative(settings, name, "landing", context)
        except LocatedError as exc:
            problems += exc.diagnostics
            continue
        if not isinstance(rendered, RenderedSurface):
            continue
        target = out / landing_path(name, rendered.locale, use.variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered.text, encoding="utf-8")
        pages.append(LandingPage(name, rendered.locale, use.variant, use.rule_id, target))
    if problems:
        raise LocatedError(problems)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(_index(settings, out, pages), encoding="utf-8")
    return pages


def landing_targets(
    settings: Settings, uses: list[CreativeUse]
) -> list[tuple[str, CreativeUse, str, bool]]:
    """Every landing page the site has: (creative, use, locale, sampled).

    One page per locale with a landing template and per variant of the rules using the
    creative; a creative no rule uses gets one page (`default`) with the sample offer.
    `nudge check` asks this too, so a link to any other page is caught before sending.
    """
    by_creative: dict[str, list[CreativeUse]] = {}
    for use in uses or []:
        if use.render:
            by_creative.setdefault(use.creative, []).append(use)
    targets = []
    for name in list_creatives(settings):
        creative = open_creative(settings, name)
        sampled = name not in by_creative
        seen: set[tuple[str | None, str]] = set()
        for use in by_creative.get(name) or [CreativeUse("sample", name, None, {})]:
            for locale in creative.locales:
                if ("landing", locale) not in creative.files or (use.variant, locale) in seen:
                    continue
                seen.add((use.variant, locale))
                targets.append((name, use, locale, sampled))
    return targets


def landing_pages(settings: Settings, uses: list[CreativeUse]) -> set[str]:
    """The paths (under the site root) of every page `build_landing_site` writes."""
    return {
        landing_path(name, locale, use.variant)
        for name, use, locale, _ in landing_targets(settings, uses)
    }


def _index(settings: Settings, out: Path, pages: list[LandingPage]) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(p.creative)}</td><td>{html.escape(p.rule_id)}</td>"
        f"<td>{html.escape(p.variant or 'default')}</td><td>{html.escape(p.locale)}</td>"
        f'<td><a href="{html.escape(p.path.relative_to(out).as_posix())}">open</a></td></tr>'
        for p in pages
    )
    title = html.escape(f"{settings.shop.name}: landing pages")
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
 body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
        margin: 32px; color: #1f2328; }}
 table {{ border-collapse: collapse; }} td, th {{ padding: 6px 14px; text-align: left;
        border-bottom: 1px solid #e5e7eb; }}
</style></head>
<body>
<h1>{title}</h1>
<table><tr><th>creative</th><th>rule</th><th>variant</th><th>locale</th><th>page</th></tr>
{rows}
</table>
</body>
</html>
"""
