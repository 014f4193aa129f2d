"""Creative checks for `nudge check`: every problem located by template file and line.

For each creative, with the offers of the rules that use it (or a sample offer),
every locale and variant is rendered for sample users, then:
- every template parses and renders (a misspelt variable fails here, not at send time);
- every locale has the same surfaces;
- ad text fits the platform limits (width with CJK counting 2; counts; TikTok chars);
- every offer fact shown in an ad is shown on the landing page for the same user and
  variant (Google's destination-mismatch policy; users drop off otherwise);
- links to the shop carry the UTM parameters; no `{{` / `{%` survives rendering.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.config import Settings
from engine.creatives.context import build_context
from engine.creatives.errors import CreativeNotFoundError, TemplateProblemError
from engine.creatives.facts import find_facts, links_in, visible_text
from engine.creatives.limits import LIMITS
from engine.creatives.links import missing_utm
from engine.creatives.loader import (
    AD_PREFIX,
    Creative,
    babel_locale,
    limit_key,
    list_creatives,
    open_creative,
    parse_ads,
)
from engine.creatives.render import (
    RenderedSurface,
    available_surfaces,
    display_path,
    render_creative,
)
from engine.creatives.samples import (
    SAMPLE_BASE_URL,
    SAMPLE_NOW,
    SAMPLE_SECRET,
    sample_offer,
    sample_users,
)
from engine.creatives.width import has_emoji, text_width
from engine.errors import Diagnostic, Location, NudgeError


@dataclass(frozen=True, slots=True)
class CreativeUse:
    """One rule (and variant) using a creative, with the offer facts of that variant."""

    rule_id: str
    creative: str
    variant: str | None
    offer: dict[str, Any] = field(default_factory=dict)
    location: Location = Location("rules")


def check_creatives(
    settings: Settings, uses: list[CreativeUse], *, now: datetime = SAMPLE_NOW
) -> list[Diagnostic]:
    """All problems of all creatives (those in templates/ and those the rules name)."""
    diagnostics: list[Diagnostic] = []
    by_creative: dict[str, list[CreativeUse]] = defaultdict(list)
    for use in uses:
        by_creative[use.creative].append(use)
    for name in sorted(set(list_creatives(settings)) | set(by_creative)):
        try:
            creative = open_creative(settings, name)
        except NudgeError as exc:
            for use in by_creative.get(name, []):
                diagnostics.append(Diagnostic(use.location, f"rule {use.rule_id}: {exc}"))
            continue
        diagnostics += _check_creative(settings, creative, by_creative.get(name, []), now)
    return list(dict.fromkeys(diagnostics))


def _check_creative(
    settings: Settings, creative: Creative, uses: list[CreativeUse], now: datetime
) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    if not creative.locales:
        shown = display_path(settings, creative.folder)
        return [Diagnostic(Location(shown), f"creative {creative.name!r} has no templates")]
    surfaces = {}
    for locale in creative.locales:
        ads = creative.files.get(("ads", locale))
        if ads is not None:
            fields, problems = parse_ads(ads, display_path(settings, ads))
            found += problems + _count_problems(settings, ads, fields)
        surfaces[locale] = available_surfaces(settings, creative.name, locale)
    found += _missing_surfaces(settings, creative, surfaces)
    sampled = not uses
    if sampled:
        uses = [CreativeUse("sample", creative.name, None, {}, Location(str(creative.folder)))]
    for use in uses:
        # A rule without a coupon really has no offer: render it that way.
        offer = sample_offer(None if sampled else use.offer, settings.shop.currency)
        for locale in creative.locales:
            for user in sample_users(locale):
                try:
                    context = build_context(
                        user,
                        offer,
                        rule_id=use.rule_id,
                        variant=use.variant,
                        settings=settings,
                        base_url=SAMPLE_BASE_URL,
                        secret=SAMPLE_SECRET,
                        now=now,
                    )
                except ValueError as exc:
                    found.append(Diagnostic(use.location, f"rule {use.rule_id}: offer: {exc}"))
                    break
                found += _check_rendering(settings, creative, use, surfaces[locale], context)
    return found


def _missing_surfaces(
    settings: Settings, creative: Creative, surfaces: dict[str, list[str]]
) -> list[Diagnostic]:
    found = []
    every = set().union(*surfaces.values())
    for locale, present in surfaces.items():
        for surface in sorted(every - set(present)):
            other = next(loc for loc, names in surfaces.items() if surface in names)
            path = creative.file_for(surface, other)
            shown = display_path(settings, path) if path else creative.name
            found.append(
                Diagnostic(
                    Location(shown),
                    f"surface {surface} exists for locale {other} but not for {locale}",
                )
            )
    return found


def _count_problems(settings: Settings, path, fields) -> list[Diagnostic]:
    shown = display_path(settings, path)
    counts: dict[str, list] = defaultdict(list)
    for ad in fields:
        counts[limit_key(ad.surface)].append(ad)
    found = []
    for key, ads in counts.items():
        limit = LIMITS[key]
        if not limit.min_count <= len(ads) <= limit.max_count:
            wanted = (
                f"{limit.min_count}–{limit.max_count}"
                if limit.min_count != limit.max_count
                else str(limit.min_count)
            )
            found.append(
                Diagnostic(
                    Location(shown, ads[0].line),
                    f"{key}: {len(ads)} given, the platform takes {wanted}",
                    severity=limit.severity,
                )
            )
    platforms = {key.rsplit(".", 1)[0] for key in counts}
    for key, limit in LIMITS.items():
        if limit.platform in platforms and limit.min_count and key not in counts:
            found.append(
                Diagnostic(
                    Location(shown),
                    f"{key}: missing, the platform needs at least {limit.min_count}",
                    severity=limit.severity,
                )
            )
    if "google.search.path2" in counts and "google.search.path1" not in counts:
        line = counts["google.search.path2"][0].line
        found.append(Diagnostic(Location(shown, line), "google.search.path2 needs path1"))
    return found


def _check_rendering(
    settings: Settings,
    creative: Creative,
    use: CreativeUse,
    surfaces: list[str],
    context: dict[str, Any],
) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    rendered: dict[str, RenderedSurface] = {}
    for surface in surfaces:
        try:
            result = render_creative(settings, creative.name, surface, context)
        except TemplateProblemError as exc:
            found += exc.diagnostics
            continue
        except CreativeNotFoundError as exc:
            found.append(Diagnostic(Location(str(creative.folder)), str(exc)))
            continue
        if isinstance(result, RenderedSurface):
            rendered[surface] = result
        else:
            # abort() is for one user's bad data; aborting for the sample user of a
            # rule means nobody would get this message.
            found.append(
                Diagnostic(
                    use.location,
                    f"{surface} of creative {creative.name!r} aborts for rule "
                    f"{use.rule_id!r}"
                    + (f" variant {use.variant!r}" if use.variant else "")
                    + f": {result.reason}",
                    "warning",
                )
            )
    for result in rendered.values():
        found += _link_problems(result, context["variant"])
        if result.surface.startswith(AD_PREFIX):
            found += _limit_problems(result)
    landing = rendered.get("landing")
    if landing is not None:
        found += _consistency_problems(use, rendered, landing, context)
    return found


def _link_problems(result: RenderedSurface, variant: str | None) -> list[Diagnostic]:
    found = []
    host = SAMPLE_BASE_URL.split("/")[2]
    for url in links_in(result.text, is_html=result.is_html):
        if url.split("/")[2:3] != [host]:
            continue
        missing = missing_utm(url, variant=variant)
        if missing:
            found.append(
                Diagnostic(
                    result.location,
                    f"{result.surface}: link {url.split('?')[0]} lacks {', '.join(missing)} "
                    "(use {{ url }}, {{ landing_url }} or {{ shop_url }})",
                )
            )
    return found


def _limit_problems(result: RenderedSurface) -> list[Diagnostic]:
    limit = result.limit
    if limit is None:
        return []
    found = []
    width = text_width(result.text)
    if width > limit.max_width:
        found.append(
            Diagnostic(
                result.location,
                f"{result.surface} is {width} wide, over the limit of {limit.max_width} "
                f"(CJK characters count 2; locale {result.locale}): {result.text!r}",
                severity=limit.severity,
            )
        )
    if not result.text:
        found.append(Diagnostic(result.location, f"{result.surface} renders empty"))
    if limit.forbid_emoji and has_emoji(result.text):
        found.append(
            Diagnostic(result.location, f"{result.surface}: {limit.platform} refuses emoji")
        )
    bad = sorted({char for char in result.text if char in limit.forbid_chars})
    if bad:
        found.append(
            Diagnostic(
                result.location,
                f"{result.surface}: {limit.platform} refuses the characters {' '.join(bad)}",
            )
        )
    return found


def _consistency_problems(
    use: CreativeUse,
    rendered: dict[str, RenderedSurface],
    landing: RenderedSurface,
    context: dict[str, Any],
) -> list[Diagnostic]:
    offer, tz = context["offer"], context["tz"]
    language = babel_locale(landing.locale)
    on_landing = {fact.key for fact in find_facts(visible_text(landing.text), offer, language, tz)}
    found = []
    for result in rendered.values():
        if not result.surface.startswith(AD_PREFIX):
            continue
        for fact in find_facts(result.text, offer, language, tz):
            if fact.key in on_landing:
                continue
            variant = f", variant {use.variant}" if use.variant else ""
            found.append(
                Diagnostic(
                    result.location,
                    f"{result.surface} shows the {fact.kind} {fact.text!r} but the landing page "
                    f"{landing.path} does not (rule {use.rule_id}{variant}, "
                    f"locale {landing.locale})",
                )
            )
    return found
