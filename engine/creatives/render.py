"""Rendering one surface of one creative for one user: `render_creative`.

Every failure is a located `TemplateProblemError` (file and line of the template),
so a bad template is reported, not sent; `abort("reason")` in a template returns a
`Skipped` with that reason, which the sender records instead of sending.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jinja2 import Template, TemplateError, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError

from engine.config import Settings
from engine.creatives import environment
from engine.creatives.environment import get_environment
from engine.creatives.errors import (
    CreativeAbort,
    CreativeNotFoundError,
    RenderLimitError,
    TemplateProblemError,
)
from engine.creatives.limits import AD_TRAFFIC, LIMITS, FieldLimit
from engine.creatives.links import slug, tracked_url
from engine.creatives.loader import (
    AD_PREFIX,
    SURFACE_FILES,
    AdField,
    Creative,
    babel_locale,
    choose_locale,
    limit_key,
    open_creative,
    parse_ads,
    shared_blocks_name,
    template_name,
)
from engine.creatives.width import text_width
from engine.errors import Diagnostic, Location

UNRENDERED = re.compile(r"\{\{|\{%")
# surface -> (utm_source, utm_medium) of the links it carries.
SURFACE_TRAFFIC = {
    "email_subject": ("email", "email"),
    "email_html": ("email", "email"),
    "email_text": ("email", "email"),
    "sms": ("sms", "sms"),
    "landing": ("landing", "referral"),
}


@dataclass(frozen=True, slots=True)
class RenderedSurface:
    """The text of one surface for one user, ready to send or publish."""

    creative: str
    surface: str
    locale: str
    text: str
    path: str
    line: int | None = None
    url: str | None = None

    @property
    def is_html(self) -> bool:
        return self.path.endswith(".html")

    @property
    def limit(self) -> FieldLimit | None:
        return LIMITS.get(limit_key(self.surface)) if self.surface.startswith(AD_PREFIX) else None

    @property
    def width(self) -> int:
        return text_width(self.text)

    @property
    def location(self) -> Location:
        return Location(self.path, self.line)


@dataclass(frozen=True, slots=True)
class Skipped:
    """The template called abort(reason), or printed an offer fact of a message without
    a coupon (`fact`, e.g. "code"): this user's message is not sent."""

    creative: str
    surface: str
    reason: str
    fact: str | None = None
    # The template line that aborted: the creative's own when it called a shared block.
    location: Location | None = None


def display_path(settings: Settings, path: Path | str) -> str:
    """Paths in messages are relative to the project folder when possible."""
    return environment.snapshot_cached(
        ("shown", settings.project_dir, str(path)), lambda: _display_path(settings, path)
    )


def _display_path(settings: Settings, path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(settings.project_dir.resolve()))
    except ValueError:
        return str(path)


def traffic_of(surface: str) -> tuple[str, str]:
    if surface.startswith(AD_PREFIX):
        return AD_TRAFFIC[limit_key(surface).rsplit(".", 1)[0]]
    return SURFACE_TRAFFIC[surface]


def landing_path(creative: str, locale: str, variant: str | None) -> str:
    """Where the landing page of (creative, locale, variant) lives under the site root."""
    return f"{creative}/{locale}/{slug(variant) if variant else 'default'}.html"


def available_surfaces(settings: Settings, creative: str, locale: str | None = None) -> list[str]:
    """Stable surface names of a creative, e.g. `email_subject`, `ad:google.search.headline_1`.

    For one locale (default: the shop's, by the fallback chain): the fixed surfaces in
    a fixed order, then the ad fields in the order of the ads file.
    """
    found = open_creative(settings, creative)
    if not found.locales:
        return []
    locale = choose_locale(locale, found.locales, settings.shop.locale)
    surfaces = [name for name in SURFACE_FILES if (name, locale) in found.files]
    ads = found.files.get(("ads", locale))
    if ads is not None:
        fields, _ = parsed_ads(ads, display_path(settings, ads))
        surfaces += [field.surface for field in fields]
    return surfaces


def render_creative(
    settings: Settings,
    creative: str,
    surface: str,
    context: dict[str, Any],
    *,
    wrap_link: Callable[[str, str], str] | None = None,
    message: dict | None = None,
) -> RenderedSurface | Skipped:
    """Render one surface of `creative` with a context from `build_context`.

    The locale is the user's by the fallback chain among the creative's locales.
    `wrap_link(name, url)`, given, replaces the creative's links (`landing`, `shop`)
    in the template's variables: delivery passes the server's tracked-click links.
    `message`, an empty dict shared by the surfaces of one message (same settings,
    context and `wrap_link`), lets them share what does not depend on the surface: the
    creative's files and locale, and the shared blocks module when the surfaces'
    variables differ only in names the blocks do not read.
    Raises TemplateProblemError (located) when the template is broken,
    CreativeNotFoundError when the creative or surface does not exist.
    """
    memo = {} if message is None else message
    setup = memo.get(("setup", creative))
    if setup is None:
        setup = memo[("setup", creative)] = _setup(settings, creative, context)
    found, locale, env = setup
    path = found.file_for(surface, locale)
    if path is None:
        raise CreativeNotFoundError(
            f"creative {creative!r} has no {surface!r} template for locale {locale} "
            f"(files: {', '.join(sorted(p.name for p in found.files.values())) or 'none'})"
        )
    shown = display_path(settings, path)
    field = _ad_field(settings, found, surface, path, shown) if path.suffix == ".yaml" else None
    variables = _variables(found, surface, locale, context, wrap_link)
    token = environment.start_budget()
    try:
        template = (
            _compile_field(env, found.name, path, field)
            if field
            else env.get_template(template_name(found.name, path))
        )
        variables["blocks"] = _reused_blocks(env, locale, variables, memo)
        text = _generate(template, variables)
    except CreativeAbort as exc:
        return Skipped(
            creative=creative,
            surface=surface,
            reason=exc.reason,
            fact=getattr(exc, "fact", None),
            location=_abort_location(
                settings, exc, found, Location(shown, field.line if field else None)
            ),
        )
    except (TemplateError, RenderLimitError, ArithmeticError, ValueError, TypeError) as exc:
        raise TemplateProblemError.single(_diagnose(settings, exc, shown, variables)) from None
    finally:
        environment.end_budget(token)
    text = _tidy(surface, text)
    line = field.line if field else None
    leftover = UNRENDERED.search(text)
    if leftover:
        raise TemplateProblemError.single(
            Diagnostic(
                Location(shown, line),
                f"{surface}: unrendered {leftover.group()!r} in the output "
                "(escaped or nested template syntax?)",
            )
        )
    return RenderedSurface(
        creative=creative,
        surface=surface,
        locale=locale,
        text=text,
        path=shown,
        line=line,
        url=variables["url"],
    )


def message_links(creative: str, surface: str, locale: str, context: dict[str, Any]):
    """{"landing": url, "shop": url}: where a surface's links lead, with UTM parameters
    and the user's token. The click server derives a tracked link's target with this
    same function, so the redirect is the link the message would have carried."""
    source, medium = traffic_of(surface)
    links = _links(
        creative,
        source,
        medium,
        locale,
        context["base_url"],
        context["rule_id"],
        context["variant"],
        context["token"],
    )
    return dict(links)


@lru_cache(maxsize=256)
def _links(creative, source, medium, locale, base, rule_id, variant, token):
    # Pure in its arguments; the surfaces of one message (email subject, text and
    # HTML) share them, so one message builds its links once instead of per surface.
    link = {
        "source": source,
        "medium": medium,
        "campaign": rule_id,
        "content": variant,
        "token": token,
    }
    page = landing_path(creative, locale, variant)
    origin = urlsplit(base)
    return (
        ("landing", tracked_url(f"{base}/{page}", **link)),
        ("shop", tracked_url(urlunsplit((origin.scheme, origin.netloc, "/", "", "")), **link)),
    )


def creative_locale(settings: Settings, creative: str, user_locale: str | None) -> str:
    """The locale a user reads `creative` in: theirs by the fallback chain."""
    return choose_locale(
        user_locale, open_creative(settings, creative).locales, settings.shop.locale
    )


def _variables(
    found: Creative,
    surface: str,
    locale: str,
    context: dict[str, Any],
    wrap_link: Callable[[str, str], str] | None,
) -> dict[str, Any]:
    links = message_links(found.name, surface, locale, context)
    if wrap_link is not None:
        links = {name: wrap_link(name, url) for name, url in links.items()}
    landing_url, shop_url = links["landing"], links["shop"]
    return {
        **context,
        "creative": found.name,
        "surface": surface,
        "locale": locale,
        "babel_locale": _babel_locale(locale),
        "landing_url": landing_url,
        "shop_url": shop_url,
        # Where this surface's call to action leads: the landing page, or from the
        # landing page itself, the shop.
        "url": shop_url if surface == "landing" else landing_url,
    }


def _setup(settings: Settings, creative: str, context: dict[str, Any]):
    """What the surfaces of one message share: the creative, the locale, the environment.
    The same for every message of a batch to users of one locale: looked up once per
    snapshot (one batch) for (settings, creative, the user's locale)."""
    requested = context["user"].get("locale")
    key = ("message setup", id(settings), creative, requested)
    found = environment.snapshot_cached(
        key, lambda: (settings, _looked_up(settings, creative, requested))
    )
    if found[0] is settings:  # not another Settings that reuses a collected one's id
        return found[1]
    return _looked_up(settings, creative, requested)


def _looked_up(settings: Settings, creative: str, requested: str | None):
    found = open_creative(settings, creative)
    locale = choose_locale(requested, found.locales, settings.shop.locale)
    templates = settings.templates_dir
    root = environment.snapshot_cached(("resolved", templates), templates.resolve)
    return found, locale, get_environment(root)


# Pure in the tag; Babel parses the locale again on every call otherwise.
_babel_locale = lru_cache(maxsize=64)(babel_locale)


def _reused_blocks(env, locale: str, variables: dict[str, Any], memo: dict):
    """The shared blocks module (offer line, call to action, terms) for the locale, if
    any. The one made for the message's previous surface is used again when it would
    be the same: the variables differ only in names that the blocks template does not
    read and that no filter reads from the context (e.g. `surface`)."""
    key = ("blocks name", locale)
    name = memo[key] if key in memo else memo.setdefault(key, _blocks_name(env, locale))
    if name is None:
        return None
    previous = memo.get(("blocks", name))
    if previous is not None:
        earlier, module = previous
        if earlier.keys() == variables.keys():
            changed = {k for k, v in variables.items() if earlier[k] != v}
            if not changed & _names_read(env, name):
                return module
    module = env.get_template(name).make_module(vars=variables)
    memo[("blocks", name)] = (dict(variables), module)
    return module


def _blocks_name(env, locale: str) -> str | None:
    shared = environment.snapshot_cached(
        ("shared blocks", env.loader.root), lambda: _shared_block_locales(env)
    )
    return shared_blocks_name(choose_locale(locale, shared, locale)) if shared else None


def _names_read(env, name: str) -> frozenset[str]:
    """Every name template `name` may read from its variables: those it names
    (jinja2.meta), and those the filters read through the context. Once per snapshot,
    so an edit is seen when the template itself is."""

    def names() -> frozenset[str]:
        return _names_in(env, env.loader.get_source(env, name)[0])

    return environment.snapshot_cached(("names read", env.loader.root, name), names)


@lru_cache(maxsize=64)
def _names_in(env, source: str) -> frozenset[str]:
    # Parsing costs milliseconds: once per distinct source, not per snapshot.
    named = meta.find_undeclared_variables(env.parse(source))
    return frozenset(named) | environment.CONTEXT_READ_BY_FILTERS


def _shared_block_locales(env) -> list[str]:
    folder = Path(env.loader.root) / environment.SHARED_FOLDER
    return sorted(path.name.split(".")[1] for path in folder.glob("blocks.*.jinja"))


_FIELD_CACHE: dict[tuple[str, int, str], Template] = {}


_ADS_CACHE: dict[tuple[str, int, str], tuple[list[AdField], list[Diagnostic]]] = {}


def parsed_ads(path: Path, shown: str) -> tuple[list[AdField], list[Diagnostic]]:
    """parse_ads, cached until the file changes (a send renders each field per user)."""
    key = (str(path), path.stat().st_mtime_ns, shown)
    if key not in _ADS_CACHE:
        _ADS_CACHE[key] = parse_ads(path, shown)
    return _ADS_CACHE[key]


def _ad_field(settings: Settings, found: Creative, surface: str, path: Path, shown: str) -> AdField:
    fields, problems = parsed_ads(path, shown)
    if problems:
        raise TemplateProblemError(problems)
    for field in fields:
        if field.surface == surface:
            return field
    raise CreativeNotFoundError(
        f"creative {found.name!r} has no ad field {surface!r} in {shown} "
        f"(fields: {', '.join(f.surface for f in fields) or 'none'})"
    )


def _compile_field(env, creative: str, path: Path, field: AdField) -> Template:
    key = (str(path), field.line, field.source)
    if key not in _FIELD_CACHE:
        # Padding with newlines makes Jinja's line numbers those of the YAML file.
        source = "\n" * (field.line - 1) + field.source
        code = env.compile(source, name=template_name(creative, path), filename=str(path))
        _FIELD_CACHE[key] = env.template_class.from_code(env, code, env.make_globals(None))
    return _FIELD_CACHE[key]


def _generate(template: Template, variables: dict[str, Any]) -> str:
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(variables):
        size += len(chunk)
        if size > environment.MAX_OUTPUT_CHARS:
            raise RenderLimitError(f"output exceeds {environment.MAX_OUTPUT_CHARS} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _tidy(surface: str, text: str) -> str:
    if surface.startswith(AD_PREFIX) or surface in ("email_subject", "sms"):
        # One line: template layout (indentation, line breaks) is not part of the text.
        return " ".join(text.split())
    return text.strip() + "\n"


def _abort_location(
    settings: Settings, exc: Exception, found: Creative, default: Location
) -> Location:
    """Where a template aborted: the innermost line of the creative's own files (where
    it called `blocks.discount()`, say), else of any template (a shared layout)."""
    root = str(settings.templates_dir.resolve())
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(root)]
    own = [f for f in frames if Path(f.filename).parent == found.folder.resolve()]
    if not frames:
        return default
    frame = (own or frames)[-1]
    return Location(display_path(settings, frame.filename), frame.lineno)


_UNDEFINED = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


def _diagnose(settings: Settings, exc: Exception, shown: str, variables: dict) -> Diagnostic:
    """A diagnostic at the template frame that failed (the innermost, e.g. in a macro)."""
    path, line = shown, getattr(exc, "lineno", None)
    if isinstance(exc, TemplateSyntaxError):
        if exc.filename:
            path = display_path(settings, exc.filename)
        return Diagnostic(Location(path, line), f"template syntax error: {exc.message}")
    root = str(settings.templates_dir.resolve())
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(root)]
    if frames:
        path, line = display_path(settings, frames[-1].filename), frames[-1].lineno
    kind = {
        SecurityError: "unsafe operation refused by the sandbox",
        UndefinedError: "undefined variable",
        RenderLimitError: "render limit exceeded",
    }.get(type(exc), type(exc).__name__)
    message = f"{kind}: {exc}{_did_you_mean(exc, variables)}"
    return Diagnostic(Location(path, line), message)


def _did_you_mean(exc: Exception, variables: dict) -> str:
    import difflib

    if not isinstance(exc, UndefinedError):
        return ""
    match = _UNDEFINED.search(str(exc))
    if not match:
        return ""
    wrong = match[1] or match[2]
    names = set(variables)
    for value in variables.values():
        if isinstance(value, dict):
            names.update(str(key) for key in value)
    close = difflib.get_close_matches(wrong, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
