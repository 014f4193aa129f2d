"""nudge.toml + environment -> one `Settings` object.

The project folder is the nearest ancestor of the working directory holding a
`nudge.toml` (found like git finds `.git`). Any key can be overridden from the
environment as `NUDGE_<SECTION>_<KEY>` (for example `NUDGE_DATABASE_URL`,
`NUDGE_SHOP_TIMEZONE`), which is how production passes secrets and URLs.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.errors import ConfigError
from engine.localtime import zone_named

CONFIG_FILE = "nudge.toml"
DEFAULT_DATABASE_FILE = "nudge.db"
ENV_PREFIX = "NUDGE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShopSettings(_Section):
    name: str = "My Shop"
    timezone: str = "UTC"
    currency: str = "CNY"
    # ISO 3166-1 alpha-2: the region of a phone number written without "+" when the
    # user has no country of their own (engine/phones.py).
    country: str = "CN"
    # Ignored since phone numbers are read with libphonenumber by country; still
    # accepted so that older nudge.toml files load.
    phone_country_code: str = "86"
    locale: str = "zh-CN"

    @field_validator("country")
    @classmethod
    def _iso_country(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError(f"{value!r} is not an ISO 3166 country code like 'CN' or 'US'")
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code like 'CNY' or 'USD'")
        return value

    @field_validator("phone_country_code")
    @classmethod
    def _country_code(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]{0,2}", value):
            raise ValueError(f"{value!r} is not a calling code: digits only, like '86' or '1'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if zone_named(value) is None:
            close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown time zone {value!r}{hint}")
        return value


class DatabaseSettings(_Section):
    # Empty means "a SQLite file in the project folder".
    url: str = ""


class LifecycleSettings(_Section):
    """Thresholds of the stage definitions (engine/lifecycle/)."""

    new_visitor_days: int = Field(default=30, gt=0)
    lapsed_days: int = Field(default=90, gt=0)
    churned_days: int = Field(default=365, gt=0)
    vip_total_spent: float = Field(default=5000, ge=0)
    vip_tiers: tuple[str, ...] = ("platinum",)


class CurrencySettings(_Section):
    """Exchange rates into the shop currency: `rates = {USD = 7.1}` means 1 USD = 7.1
    of the shop currency. A purchase in a currency without a rate is rejected at
    ingest: amounts in different currencies are never added up."""

    rates: dict[str, Decimal] = Field(default_factory=dict)

    @field_validator("rates")
    @classmethod
    def _positive_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, rate in value.items():
            if not re.fullmatch(r"[A-Z]{3}", code):
                raise ValueError(f"{code!r} is not an ISO 4217 currency code like 'USD'")
            if not rate.is_finite() or rate <= 0:
                raise ValueError(f"the rate of {code} must be a positive number, got {rate}")
        return value


class EventsSettings(_Section):
    """Event types the shop sends, besides those already ingested: `nudge check`
    warns about a rule that names a type outside both (a typo such as `purchse`)."""

    known: tuple[str, ...] = ()


class DaemonSettings(_Section):
    """`nudge run` (docs/daemon.md)."""

    # The longest wait between two evaluations when nothing new arrives; new data
    # wakes the daemon at once (NOTIFY on PostgreSQL, a change check on SQLite).
    tick_seconds: float = Field(default=60, ge=1, le=3600)
    # How often SQLite is checked for new data (PRAGMA data_version), and the
    # dispatcher polls the outbox when idle.
    poll_seconds: float = Field(default=1, gt=0, le=60)
    # After downtime, a schedule slot younger than this still runs (once, coalesced);
    # older ones are recorded as missed and shown in `nudge status`.
    misfire_grace: str = "6h"
    # Evaluations that considered nothing are kept this long, then pruned.
    keep_runs: str = "30d"

    @field_validator("misfire_grace", "keep_runs")
    @classmethod
    def _duration(cls, value: str) -> str:
        from engine.durations import parse_duration

        parse_duration(value)
        return value


class RulesSettings(_Section):
    folder: str = "rules"
    templates: str = "templates"
    # Salt of the deterministic holdout/variant hash; changing it reshuffles everyone.
    assignment_salt: str = "nudge"


class ServeSettings(_Section):
    """`nudge serve` (docs/serve.md); its signing secret is NUDGE_SERVE_SECRET, never a file."""

    # The public https:// origin the server is reached at (behind the reverse proxy).
    # When set, `[delivery.email] unsubscribe_url` defaults to `<base_url>/u/{token}`.
    base_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=1, le=65535)
    # How long the links of a message keep working: the personal landing token (`?t=`)
    # and the tracked /c/ links. Past it, a link shows the generic page.
    link_days: int = Field(default=90, ge=1, le=3650)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


class Settings(BaseModel):
    """Everything Nudge reads from nudge.toml and the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shop: ShopSettings = ShopSettings()
    database: DatabaseSettings = DatabaseSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    rules: RulesSettings = RulesSettings()
    currency: CurrencySettings = CurrencySettings()
    events: EventsSettings = EventsSettings()
    daemon: DaemonSettings = DaemonSettings()
    serve: ServeSettings = ServeSettings()
    # Sections owned by later subsystems (delivery, caps, channels) are kept raw here
    # and validated by their owners, so an older engine still reads a newer file.
    delivery: dict[str, Any] = Field(default_factory=dict)

    project_dir: Path = Path(".")
    config_path: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _serve_unsubscribe_url(cls, data: Any) -> Any:
        # `[serve] base_url` (https) makes `nudge serve`'s /u/{token} the List-Unsubscribe
        # URL unless `[delivery.email] unsubscribe_url` names another.
        if not isinstance(data, dict) or not isinstance(data.get("serve"), dict):
            return data
        base = data["serve"].get("base_url")
        delivery = data.get("delivery") or {}
        email = delivery.get("email", {}) if isinstance(delivery, dict) else None
        if not (isinstance(base, str) and base.startswith("https://")):
            return data
        if not isinstance(email, dict) or "unsubscribe_url" in email:
            return data
        email = {**email, "unsubscribe_url": base.rstrip("/") + "/u/{token}"}
        return {**data, "delivery": {**delivery, "email": email}}

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.shop.timezone)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return _resolve_sqlite_path(self.database.url, self.project_dir)
        return f"sqlite:///{(self.project_dir / DEFAULT_DATABASE_FILE).resolve()}"

    @property
    def rules_dir(self) -> Path:
        return self.project_dir / self.rules.folder

    @property
    def templates_dir(self) -> Path:
        return self.project_dir / self.rules.templates


def _resolve_sqlite_path(url: str, project_dir: Path) -> str:
    """Relative SQLite paths are relative to the project folder, not the cwd."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            return prefix + str((project_dir / rest).resolve())
    return url


def find_project_dir(start: Path | None = None) -> Path | None:
    """The nearest folder at or above `start` that holds nudge.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return None


def load_settings(
    project_dir: Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read nudge.toml (if any) and apply `NUDGE_*` environment overrides."""
    environ = dict(os.environ if environ is None else environ)
    folder = project_dir if project_dir is not None else find_project_dir()
    config_path = folder / CONFIG_FILE if folder is not None else None
    data: dict[str, Any] = {}
    text = ""
    if config_path is not None and config_path.is_file():
        text = config_path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: {exc}") from None
    overridden = _apply_environment(data, environ)
    data["project_dir"] = (folder or Path.cwd()).resolve()
    data["config_path"] = config_path if config_path and config_path.is_file() else None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path, text, overridden)) from None


def _apply_environment(data: dict[str, Any], environ: dict[str, str]) -> set[str]:
    """Merge NUDGE_SECTION_KEY variables into `data`; returns the dotted keys set."""
    sections = {
        name: model
        for name, model in Settings.model_fields.items()
        if isinstance(model.annotation, type) and issubclass(model.annotation, _Section)
    }
    overridden: set[str] = set()
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for section, field in sections.items():
            if not rest.startswith(section + "_"):
                continue
            key = rest[len(section) + 1 :]
            annotation = field.annotation
            assert isinstance(annotation, type)
            if key not in annotation.model_fields:
                continue
            target = data.setdefault(section, {})
            target[key] = _parse_env_value(value, annotation.model_fields[key].annotation)
            overridden.add(f"{section}.{key}")
    return overridden


def _parse_env_value(value: str, annotation: Any) -> Any:
    if getattr(annotation, "__origin__", None) is tuple:
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _describe(
    exc: ValidationError, config_path: Path | None, text: str, overridden: set[str]
) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join(loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(loc)
        if dotted in overridden:
            where = f"environment variable {ENV_PREFIX}{'_'.join(loc).upper()}"
        elif config_path is not None:
            line = _line_of(text, loc)
            where = f"{config_path}:{line}" if line else str(config_path)
        else:
            where = "settings"
        lines.append(f"{where}: {dotted}: {message}")
    return "\n".join(lines)


def _did_you_mean(loc: list[str]) -> str:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    choices = [name for name in model.model_fields if name not in ("project_dir", "config_path")]
    close = difflib.get_close_matches(loc[-1], choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line of `section.key` in the TOML text (tomllib keeps no positions)."""
    section, key = (loc[0], loc[-1]) if len(loc) > 1 else (None, loc[0])
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
            if section is not None and key == section and current == section:
                return number
            continue
        if re.match(rf"^\s*{re.escape(key)}\s*=", line) and current == section:
            return number
    return None
