"""Finding creatives on disk: which surfaces and locales a creative folder holds.

A creative is a folder `templates/<name>/` with one file per surface and locale:

    email_subject.<locale>.txt   email.<locale>.html   email.<locale>.txt
    sms.<locale>.txt             landing.<locale>.html ads.<locale>.yaml

`ads.<locale>.yaml` maps platform -> field -> a template string or a list of them
(several Google headlines). Each value is compiled as its own template, padded so
that Jinja's line numbers are the line in the YAML file.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from babel import Locale, UnknownLocaleError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from engine.config import Settings
from engine.creatives.environment import SHARED_FOLDER, check_creative_name, snapshot_cached
from engine.creatives.errors import CreativeNotFoundError
from engine.creatives.limits import LIMITS, PLATFORMS, fields_of
from engine.errors import Diagnostic, Location

# surface -> (file stem, extension); "ads" expands to one surface per ad field.
SURFACE_FILES: dict[str, tuple[str, str]] = {
    "email_subject": ("email_subject", "txt"),
    "email_html": ("email", "html"),
    "email_text": ("email", "txt"),
    "sms": ("sms", "txt"),
    "landing": ("landing", "html"),
}
ADS_FILE = ("ads", "yaml")
AD_PREFIX = "ad:"
_FILE = re.compile(
    r"^(?P<stem>email_subject|email|sms|landing|ads)\."
    r"(?P<locale>[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)\.(?P<ext>txt|html|yaml)$"
)


@dataclass(frozen=True, slots=True)
class AdField:
    """One templated ad text, e.g. surface `ad:google.search.headline_2`."""

    surface: str
    platform: str
    field: str
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class Creative:
    """What one creative folder holds, per locale."""

    name: str
    folder: Path
    # (surface or "ads", locale) -> file
    files: dict[tuple[str, str], Path] = field(default_factory=dict)

    @property
    def locales(self) -> list[str]:
        return sorted({locale for _, locale in self.files})

    def file_for(self, surface: str, locale: str) -> Path | None:
        key = "ads" if surface.startswith(AD_PREFIX) else surface
        return self.files.get((key, locale))


def template_name(creative: str, path: Path) -> str:
    """The loader name of a file: `creative/file`."""
    return f"{creative}/{path.name}"


def shared_blocks_name(locale: str) -> str:
    return f"{SHARED_FOLDER}/blocks.{locale}.jinja"


def list_creatives(settings: Settings) -> list[str]:
    root = settings.templates_dir
    if not root.is_dir():
        return []
    return sorted(
        path.name
        for path in root.iterdir()
        if path.is_dir() and path.name != SHARED_FOLDER and not path.name.startswith(".")
    )


def open_creative(settings: Settings, name: str) -> Creative:
    """The files of creative `name` (listed once per delivery batch, see
    environment.files_snapshot)."""
    return snapshot_cached(
        ("creative", settings.templates_dir, name), lambda: _read_creative(settings, name)
    )


def _read_creative(settings: Settings, name: str) -> Creative:
    check_creative_name(name)
    folder = settings.templates_dir / name
    if not folder.is_dir():
        close = difflib.get_close_matches(name, list_creatives(settings), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CreativeNotFoundError(f"no creative {name!r} in {settings.templates_dir}{hint}")
    files: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir()):
        match = _FILE.match(path.name)
        if not match or not path.is_file():
            continue
        stem, locale, ext = match["stem"], match["locale"], match["ext"]
        if (stem, ext) == ADS_FILE:
            files[("ads", locale)] = path
        for surface, expected in SURFACE_FILES.items():
            if expected == (stem, ext):
                files[(surface, locale)] = path
    return Creative(name=name, folder=folder, files=files)


def _tag_key(tag: str) -> str:
    return tag.replace("_", "-").lower()


def choose_locale(requested: str | None, available: list[str], default: str) -> str:
    """The user's locale, else its language (zh-TW -> zh -> zh-CN), else the shop's.

    Same-language fallback first: a zh-TW reader understands zh-CN far better than
    the shop default, which may be another language.
    """
    if not available:
        raise CreativeNotFoundError("the creative has no templates for any locale")
    by_key = {_tag_key(tag): tag for tag in available}
    for wanted in (requested, default):
        if not wanted:
            continue
        parts = _tag_key(wanted).split("-")
        for size in range(len(parts), 0, -1):
            if "-".join(parts[:size]) in by_key:
                return by_key["-".join(parts[:size])]
        same_language = sorted(key for key in by_key if key.split("-")[0] == parts[0])
        default_key = _tag_key(default)
        if default_key in same_language:
            return by_key[default_key]
        if same_language:
            return by_key[same_language[0]]
    return sorted(available)[0]


def babel_locale(tag: str) -> str:
    try:
        return str(Locale.parse(tag.replace("-", "_")))
    except (UnknownLocaleError, ValueError):
        return "en"


def parse_ads(path: Path, display: str) -> tuple[list[AdField], list[Diagnostic]]:
    """Read an ads.<locale>.yaml: its fields with their lines, and located problems."""
    text = path.read_text(encoding="utf-8")
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"invalid YAML: {exc.problem or exc.context}"
        if "{" in text:
            message += " (quote template values: headline: '{{ ... }}')"
        return [], [Diagnostic(Location(display, line), message)]
    if data is None:
        return [], []
    if not hasattr(data, "items"):
        return [], [Diagnostic(Location(display, 1), "expected a mapping of platform: fields")]
    fields: list[AdField] = []
    problems: list[Diagnostic] = []
    for platform, platform_fields in data.items():
        key_line = data.lc.key(platform)[0] + 1
        if platform not in PLATFORMS:
            problems.append(
                Diagnostic(
                    Location(display, key_line),
                    f"unknown ad platform {platform!r}{_hint(platform, PLATFORMS)}",
                )
            )
            continue
        if not hasattr(platform_fields, "items"):
            problems.append(Diagnostic(Location(display, key_line), "expected field: text"))
            continue
        for name, value in platform_fields.items():
            line = platform_fields.lc.key(name)[0] + 1
            if name not in fields_of(platform):
                problems.append(
                    Diagnostic(
                        Location(display, line),
                        f"unknown {platform} field {name!r}{_hint(name, fields_of(platform))}",
                    )
                )
                continue
            key = f"{platform}.{name}"
            if isinstance(value, list):
                for index, item in enumerate(value, start=1):
                    item_line = value.lc.item(index - 1)[0] + 1
                    fields.append(_ad_field(key, platform, name, item, item_line, index))
            else:
                fields.append(_ad_field(key, platform, name, value, line, None))
    for field_ in fields:
        if not isinstance(field_.source, str):
            problems.append(
                Diagnostic(Location(display, field_.line), f"{field_.surface}: expected text")
            )
    return [f for f in fields if isinstance(f.source, str)], problems


def _ad_field(key: str, platform: str, name: str, value, line: int, index: int | None) -> AdField:
    # A list always gets an index so that the surface names stay stable as items are added.
    surface = f"{AD_PREFIX}{key}" + (f"_{index}" if index is not None else "")
    source = str(value) if isinstance(value, str | int | float) else value
    return AdField(surface=surface, platform=platform, field=name, source=source, line=line)


def limit_key(ad_surface: str) -> str:
    """`ad:google.search.headline_2` -> `google.search.headline`."""
    key = ad_surface.removeprefix(AD_PREFIX)
    base, _, suffix = key.rpartition("_")
    return base if suffix.isdigit() and base in LIMITS else key


def _hint(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
