"""The `[delivery]` section of nudge.toml, validated here by its owner.

```toml
[delivery]
batch_size = 500                 # rows claimed at once
sub_batch_size = 20              # rows of a first sub-batch: consent, unless, caps and
recheck = "2s"                   #   the lease are re-checked between sub-batches (below)
lease = "5m"                     # a crashed dispatcher's claims are taken over after this
dispatchers = 1                  # at once, each on a thread (PostgreSQL: 2-3 are faster)
base_url = "https://shop.example.com/offers"   # landing pages linked from emails and SMS
policies = ["consent", "rule", "send_window", "caps"]   # the default order (docs/delivery.md)

[delivery.retry]
max_attempts = 8
base = "30s"                     # first retry after ~30s, doubling, jittered
max_delay = "6h"

[delivery.caps]                  # global per-channel frequency caps per user
email = {max = 2, per = "7d"}    # the highest-priority messages win; others skipped
sms = {max = 1, per = "1d", when_capped = "defer"}

[delivery.send_windows]          # default send window per channel, user's local time
sms = {between = ["09:00", "21:00"]}

[delivery.email]
backend = "file"                 # file | smtp
folder = "outbox/email"          # file backend
host = "smtp.example.com"        # smtp backend; password from NUDGE_SMTP_PASSWORD
port = 587
starttls = true
user = "nudge"
connections = 4                  # SMTP connections in use at once (default 1)
from_address = "shop@example.com"
unsubscribe_url = "https://shop.example.com/unsubscribe/{token}"

[delivery.sms]
backend = "file"                 # file | http
url = "https://sms.example.com/send"

[delivery.webhook]
backend = "http"                 # http | file
concurrency = 4                  # requests in flight at once (default 1)

[delivery.webhooks.crm]          # named endpoints for `webhook: {url: crm}`
url = "https://crm.example.com/hooks/nudge"
secret_env = "NUDGE_WEBHOOK_CRM_SECRET"

[delivery.channels.loyalty]      # a plugin's channel, validated by its factory
url = "https://loyalty.example.com/api/awards"
```
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from datetime import time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from engine.durations import parse_duration
from engine.errors import ConfigError

Duration = Annotated[str, StringConstraints(strip_whitespace=True)]

# Consent first: a user without consent is skipped, whatever else holds. Then the rule:
# an action its rule no longer wants (`unless`, flight over, paused) must not use a cap
# slot. Then the send window, before caps: a message deferred to the morning must not
# use up today's slot either.
DEFAULT_ORDER: tuple[str, ...] = ("consent", "rule", "send_window", "caps")

REQUIRED = ("consent",)


def check_policy_names(names: Sequence[str]) -> None:
    """Raise ValueError (shown under the key `delivery.policies`) for a bad list."""
    # Nudge's four, then the ones plugins register (engine.delivery.policy_kinds).
    from engine.delivery.policy_kinds import POLICY_FACTORIES

    unknown = [name for name in names if name not in DEFAULT_ORDER]
    registered = [*DEFAULT_ORDER, *sorted(set(POLICY_FACTORIES) - set(DEFAULT_ORDER))]
    for name in unknown:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(registered)
            raise ValueError(f"unknown delivery policy {name!r}{hint}; known: {known}")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"delivery policy listed twice: {', '.join(repeated)}")
    for name in REQUIRED:
        if name not in names:
            raise ValueError(f"the {name!r} policy cannot be left out")


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Model):
    max_attempts: int = Field(default=8, ge=1, le=100)
    base: Duration = "30s"
    max_delay: Duration = "6h"

    _check = field_validator("base", "max_delay")(_duration)


class CapConfig(_Model):
    max: int = Field(ge=0)
    per: Duration
    # skip: the capped message is skipped with reason "capped" (the usual choice, so a
    # backlog cannot flood the user later); defer: it waits until a slot frees.
    when_capped: Literal["skip", "defer"] = "skip"

    _check = field_validator("per")(_duration)

    @property
    def window(self) -> timedelta:
        return parse_duration(self.per)


class SendWindow(_Model):
    """Local hours between which a message may be sent; start > end wraps midnight."""

    between: tuple[str, str]

    @field_validator("between")
    @classmethod
    def _hours(cls, value: tuple[str, str]) -> tuple[str, str]:
        for item in value:
            if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", item):
                raise ValueError(f"{item!r} is not a time of day HH:MM (00:00 to 23:59)")
        if value[0] == value[1]:
            raise ValueError("the window is empty: start and end are equal")
        return value

    @property
    def start(self) -> time:
        return time.fromisoformat(self.between[0])

    @property
    def end(self) -> time:
        return time.fromisoformat(self.between[1])


class EmailConfig(_Model):
    backend: Literal["file", "smtp"] = "file"
    folder: str = "outbox/email"
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password_env: str = "NUDGE_SMTP_PASSWORD"
    timeout: float = Field(default=30, gt=0)
    # SMTP connections used at once (a pool): that many emails are in flight together.
    connections: int = Field(default=1, ge=1, le=32)
    # One connection: read each reply only once the next email is built, and use the
    # server's PIPELINING when it offers it (engine/delivery/channels/smtp_pipeline.py);
    # false: wait for every reply before going on, as smtplib's sendmail does.
    pipelined: bool = True
    from_address: str = "shop@example.com"
    from_name: str | None = None
    reply_to: str | None = None
    # {token} is replaced by the user's unsubscribe token (RFC 8058 one-click URL).
    unsubscribe_url: str = "https://shop.example.com/unsubscribe/{token}"
    unsubscribe_mailto: str | None = None

    @field_validator("unsubscribe_url")
    @classmethod
    def _has_token(cls, value: str) -> str:
        if "{token}" not in value or not value.startswith("https://"):
            raise ValueError("must be an https:// URL containing {token} (RFC 8058)")
        return value


class HttpBackendConfig(_Model):
    backend: Literal["file", "http"] = "file"
    folder: str = "outbox/sms"
    url: str | None = None
    secret_env: str = "NUDGE_WEBHOOK_SECRET"
    timeout: float = Field(default=10, gt=0)
    # Requests in flight at once (http backend), each on its own sending thread.
    concurrency: int = Field(default=1, ge=1, le=32)


class EndpointConfig(_Model):
    url: str
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class AudiencesConfig(_Model):
    folder: str = "audiences"
    platforms: tuple[Literal["google", "meta", "csv"], ...] = ("csv",)


class DeliveryConfig(_Model):
    batch_size: int = Field(default=500, ge=1, le=100_000)
    # A claimed batch is sent in sub-batches; before each, the lease is confirmed and
    # consent, the rule's `unless` and caps are re-read for its rows; its outcomes are
    # recorded after it. The first has `sub_batch_size` rows, each next one as many as
    # take about half of `recheck` at the pace of the last (at least sub_batch_size). A
    # sub-batch still sending after `recheck` is cut there (the rest is re-checked
    # first). So an unsubscribe stops a batch within about `recheck` however slow the
    # channel, and fast channels pay the per-sub-batch queries rarely.
    sub_batch_size: int = Field(default=20, ge=1, le=100_000)
    recheck: Duration = "2s"
    lease: Duration = "5m"
    # Dispatchers a daemon (or `nudge dispatch`) runs at once, each on a thread with its
    # own channels. On PostgreSQL one waits for the server while another runs Python:
    # 2-3 deliver ~1.5x as fast as one; on SQLite (one writer at a time) keep 1.
    dispatchers: int = Field(default=1, ge=1, le=16)
    # Where the landing pages of creatives are published (links in emails and SMS).
    base_url: str = "https://shop.example.com/offers"
    retry: RetryConfig = RetryConfig()
    caps: dict[str, CapConfig] = Field(default_factory=dict)
    send_windows: dict[str, SendWindow] = Field(default_factory=dict)
    email: EmailConfig = EmailConfig()
    sms: HttpBackendConfig = HttpBackendConfig()
    webhook: HttpBackendConfig = HttpBackendConfig(backend="http", folder="outbox/webhook")
    webhooks: dict[str, EndpointConfig] = Field(default_factory=dict)
    audiences: AudiencesConfig = AudiencesConfig()
    # The delivery policies, in the order they check each action (engine.delivery.
    # middleware, docs/delivery.md); None is the default order.
    policies: tuple[str, ...] | None = None
    # Settings of channels that plugins add (`[delivery.channels.loyalty]`), by channel
    # name; each plugin's channel factory validates its own (docs/plugins.md).
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Cost of one send per channel in the shop currency, for ROI in `nudge report`
    # (engine/measurement/report.py validates it and names a bad key).
    costs: dict[str, Any] = Field(default_factory=dict)

    _check = field_validator("lease", "recheck")(_duration)

    @field_validator("policies")
    @classmethod
    def _known_policies(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            check_policy_names(value)
        return value

    @property
    def lease_duration(self) -> timedelta:
        return parse_duration(self.lease)

    @property
    def recheck_duration(self) -> timedelta:
        return parse_duration(self.recheck)


def _known_keys() -> list[str]:
    models = (DeliveryConfig, RetryConfig, CapConfig, SendWindow, EmailConfig)
    models += (HttpBackendConfig, EndpointConfig, AudiencesConfig)
    return sorted({name for model in models for name in model.model_fields})


def parse_delivery_config(raw: dict, source: str = "nudge.toml") -> DeliveryConfig:
    """Validate `settings.delivery`; every error names its dotted key."""
    try:
        return DeliveryConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            dotted = ".".join(["delivery", *(str(p) for p in error["loc"])])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(error["loc"][-1]), _known_keys(), n=1)
                message = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
            lines.append(f"{source}: {dotted}: {message}")
        raise ConfigError("\n".join(lines)) from None


def delivery_config(settings) -> DeliveryConfig:
    """The validated delivery section of `settings`."""
    source = str(settings.config_path) if settings.config_path else "settings"
    return parse_delivery_config(settings.delivery, source)
