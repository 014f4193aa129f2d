"""Creative checks for `nudge check`: every problem located by template file and line.

For each creative, with the offers of the rules that use it (or a sample offer),
every locale and variant is rendered for sample users, then:
- every template parses and renders (a misspelt variable fails here, not at send time);
- every locale has the same surfaces;
- ad text fits the platform limits (width with CJK counting 2; counts; TikTok chars);
- every offer fact shown in an ad is shown on the landing page for the same user and
  variant (Google's destination-mismatch policy; users drop off otherwise);
- links to the shop carry the UTM parameters; no `{{` / `{%` survives rendering;
- links to landing pages lead to pages that `nudge landing build` writes;
- a template that prints an offer fact for a rule without a coupon is an error at
  its line (every such message would be skipped at send time);
- an email or SMS action's creative has that channel's templates in every locale
  (otherwise every message would die at send, after its coupons were issued).
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.action_kinds import EMAIL_SURFACES
from engine.config import Settings
from engine.creatives.context import build_context, plain_offer
from engine.creatives.environment import Printed, recording_printed
from engine.creatives.errors import CreativeNotFoundError, TemplateProblemError
from engine.creatives.facts import find_facts, links_in, visible_text
from engine.creatives.landing import landing_pages
from engine.creatives.limits import LIMITS
from engine.creatives.links import missing_utm
from engine.creatives.loader import (
    AD_PREFIX,
    SURFACE_FILES,
    Creative,
    babel_locale,
    limit_key,
    list_creatives,
    open_creative,
    parse_ads,
)
from engine.creatives.render import (
    RenderedSurface,
    Skipped,
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
from engine.creatives.uses import CreativeUse
from engine.creatives.width import has_emoji, text_width
from engine.errors import Diagnostic, Location, NudgeError

# The surfaces an action of each kind renders for one message (engine/actions/email.py
# and sms.py); a webhook's creative is optional and renders nothing today.
CHANNEL_SURFACES: dict[str, tuple[str, ...]] = {"email": tuple(EMAIL_SURFACES), "sms": ("sms",)}
CHANNEL_NAMES = {"email": ("email", "an email"), "sms": ("SMS", "an SMS")}
# How a missing offer fact is named in messages.
FACT_NAMES = {
    "value": "amount",
    "percent_off": "percentage",
    "min_order": "minimum order",
    "expires_at": "end date",
    "code": "code",
}


def check_creatives(
    settings: Settings, uses: list[CreativeUse], *, now: datetime = SAMPLE_NOW
) -> list[Diagnostic]:
    """All problems of all creatives (those in templates/ and those the rules name)."""
    diagnostics: list[Diagnostic] = []
    by_creative: dict[str, list[CreativeUse]] = defaultdict(list)
    for use in uses:
        by_creative[use.creative].append(use)
    pages = landing_pages(settings, uses)
    for name in sorted(set(list_creatives(settings)) | set(by_creative)):
        try:
            creative = open_creative(settings, name)
        except NudgeError as exc:
            for use in by_creative.get(name, []):
                diagnostics.append(Diagnostic(use.location, f"rule {use.rule_id}: {exc}"))
            continue
        diagnostics += _channel_problems(settings, creative, by_creative.get(name, []))
        diagnostics += _check_creative(settings, creative, by_creative.get(name, []), now, pages)
    return list(dict.fromkeys(diagnostics))


def _channel_problems(
    settings: Settings, creative: Creative, uses: list[CreativeUse]
) -> list[Diagnostic]:
    """An email or SMS action whose creative lacks that channel's templates, at its rule."""
    found = []
    for use in uses:
        needed = CHANNEL_SURFACES.get(use.kind or "")
        if needed is None or not creative.locales:
            continue
        lacking = [
            locale
            for locale in creative.locales
            if any((surface, locale) not in creative.files for surface in needed)
        ]
        if not lacking:
            continue
        files = ", ".join("{}.<locale>.{}".format(*SURFACE_FILES[s]) for s in needed)
        channel, article = CHANNEL_NAMES[use.kind or ""]
        kinds = {kind for kind, _ in creative.files}
        present = [kind for kind in (*SURFACE_FILES, "ads") if kind in kinds]
        others = [
            name
            for name in list_creatives(settings)
            if name != creative.name and _has_channel(settings, name, needed)
        ]
        hints = [f"it has: {', '.join(present)}"] if present else []
        if others:
            hints.append(f"creatives with {article}: {', '.join(others)}")
        found.append(
            Diagnostic(
                use.location,
                f"rule {use.rule_id!r}: creative {creative.name!r} cannot be sent by {channel}: "
                f"it has no {files} for locale {', '.join(lacking)}"
                + (f" ({'; '.join(hints)})" if hints else ""),
            )
        )
    return found


def _has_channel(settings: Settings, name: str, needed: tuple[str, ...]) -> bool:
    try:
        other = open_creative(settings, name)
    except NudgeError:
        return False
    return bool(other.locales) and all(
        (surface, locale) in other.files for surface in needed for locale in other.locales
    )


def _check_creative(
    settings: Settings,
    creative: Creative,
    uses: list[CreativeUse],
    now: datetime,
    pages: set[str],
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
    uses = [use for use in uses if use.render]
    sampled = not uses
    if sampled:
        uses = [CreativeUse("sample", creative.name, None, {}, Location(str(creative.folder)))]
    # rule -> the places that print an offer fact the rule does not have.
    no_offer: dict[str, dict[Location | None, tuple[CreativeUse, Skipped]]] = defaultdict(dict)
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
                found += _check_rendering(
                    settings, creative, use, surfaces[locale], context, pages, no_offer[use.rule_id]
                )
    found += [_no_offer_problem(creative, places) for places in no_offer.values() if places]
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
    pages: set[str],
    no_offer: dict[Location | None, tuple[CreativeUse, Skipped]],
) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    rendered: dict[str, RenderedSurface] = {}
    printed: dict[str, list[Printed]] = {}
    for surface in surfaces:
        try:
            with recording_printed() as printed[surface]:
                result = render_creative(settings, creative.name, surface, context)
        except TemplateProblemError as exc:
            found += exc.diagnostics
            continue
        except CreativeNotFoundError as exc:
            found.append(Diagnostic(Location(str(creative.folder)), str(exc)))
            continue
        if isinstance(result, RenderedSurface):
            rendered[surface] = result
        elif result.fact is not None:
            no_offer.setdefault(result.location, (use, result))
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
        found += _landing_link_problems(settings, result, printed[result.surface], pages)
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


def _no_offer_problem(
    creative: Creative, places: dict[Location | None, tuple[CreativeUse, Skipped]]
) -> Diagnostic:
    """Templates print an offer fact, and the rule has no coupon: nobody gets them.

    One error per rule, at the first such line: a coupon creative used without a coupon
    prints its offer on every surface and locale, and that is one mistake, not twenty.
    """
    use, skipped = next(iter(places.values()))
    fact = skipped.fact or ""
    others = len(places) - 1
    more = f" ({others} more lines of creative {creative.name!r} do too)" if others else ""
    return Diagnostic(
        skipped.location or use.location,
        f"{skipped.surface} shows the offer's {FACT_NAMES.get(fact, fact)} (offer.{fact}) but "
        f"rule {use.rule_id!r} has no coupon: add a coupon action to the rule, or show it "
        f"only when there is one, inside {{% if offer.{fact} %}}...{{% endif %}}{more}",
    )


_PAGE = re.compile(r"^(?P<creative>[^/]+)/(?P<locale>[^/]+)/(?P<name>[^/]+)\.html$")


def _landing_link_problems(
    settings: Settings,
    result: RenderedSurface,
    printed: list[Printed],
    pages: set[str],
) -> list[Diagnostic]:
    """Links into the landing site must lead to a page `nudge landing build` writes."""
    found = []
    root = SAMPLE_BASE_URL + "/"
    for url in links_in(result.text, is_html=result.is_html):
        if not url.startswith(root):
            continue
        page = urlsplit(url).path.removeprefix(urlsplit(root).path)
        why = None if page in pages else _why_not_built(settings, page, pages)
        if why is None:
            continue
        found.append(
            Diagnostic(
                _link_location(settings, result, printed, url),
                f"{result.surface} links to the landing page {page}, which no creative builds "
                f"({why})",
            )
        )
    return found


def _link_location(
    settings: Settings, result: RenderedSurface, printed: list[Printed], url: str
) -> Location:
    """The template line that printed the link (or its start), else the line that has it."""
    sources = [p for p in printed if "://" in p.text and url.startswith(p.text)]
    if sources:
        best = max(sources, key=lambda p: len(p.text))
        return Location(display_path(settings, best.filename), best.line)
    if result.line is None:
        # Typed into the template by hand: find the line that holds it.
        written = url.split("?")[0]
        path = settings.project_dir / result.path
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        for number, line in enumerate(lines, start=1):
            if written in line:
                return Location(result.path, number)
    return result.location


def _why_not_built(settings: Settings, page: str, pages: set[str]) -> str | None:
    """Why `page` is not built; None when another check already says (a landing
    template that exists for other locales of the creative but not this one)."""
    match = _PAGE.match(page)
    if match is None:
        return "landing pages are <creative>/<locale>/<variant>.html"
    name, locale = match["creative"], match["locale"]
    creatives = list_creatives(settings)
    if name not in creatives:
        close = difflib.get_close_matches(name, creatives, n=1)
        return f"no creative {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
    folder = display_path(settings, settings.templates_dir / name)
    built = sorted(Path(p).stem for p in pages if p.startswith(f"{name}/{locale}/"))
    if not built:
        creative = open_creative(settings, name)
        if any(surface == "landing" for surface, _ in creative.files):
            return None  # "surface landing exists for locale .. but not for .."
        return f"{folder} has no landing.{locale}.html"
    return f"the {locale} pages of {name!r} are {', '.join(built)}"


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
    offer, tz = plain_offer(context["offer"]), context["tz"]
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
