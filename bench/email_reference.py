"""The "render by hand + smtplib" limit of bench/dispatch.py's smtp case.

What a developer would write without Nudge to send the same creative: the templates
Nudge renders (templates/winback, en, and the shared layout and blocks it extends),
loaded once into a plain `jinja2.sandbox.ImmutableSandboxedEnvironment` (autoescape
for .html, StrictUndefined, the whitespace options the templates are written for),
rendered with per-user context values prepared as literal dicts before the clock
starts (no database, consent, caps, coupon issue or outcome records), composed with
the standard library's `email.message.EmailMessage` (text + HTML alternative) and sent
with `smtplib.SMTP.send_message` on one connection.

The filters the templates use (`money`, `date`, `percent`) are written by hand for
the one locale and currency of the bench (no Babel): a lower bound on what a
hand-written renderer costs, not a feature-for-feature copy of engine.creatives.
"""

from __future__ import annotations

import smtplib
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

CREATIVE = "winback"
LOCALE = "en"
FROM = "My Shop <shop@example.com>"  # Nudge's default From for the default shop name
LANDING = (  # the link Nudge renders for this creative, locale and rule (no secret set)
    "https://shop.example.com/offers/winback/en/default.html"
    "?utm_source=email&utm_medium=email&utm_campaign=bench"
)
UNSUBSCRIBE = "https://shop.example.com/unsubscribe/{token}"
CURRENCY_SIGNS = {"CNY": "CN\u00a5"}  # how Babel prints CNY in en


def _money(value: Any, currency: str = "CNY") -> str:
    return f"{CURRENCY_SIGNS[currency]}{value:,}"


def _date(value: date) -> str:
    return f"{value:%B} {value.day}, {value.year}"  # Babel's "long" date in en


def _percent(value: Any) -> str:
    return f"{value}%"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One user's literal values: the template context and the message's own headers."""

    context: dict[str, Any]
    to: str
    message_id: str
    unsubscribe_url: str


class HandRenderer:
    """The creative's three email templates and its blocks, compiled once."""

    def __init__(self, templates: Path, *, creative: str = CREATIVE, locale: str = LOCALE):
        env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(templates)),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(money=_money, date=_date, percent=_percent)
        self.subject = env.get_template(f"{creative}/email_subject.{locale}.txt")
        self.text = env.get_template(f"{creative}/email.{locale}.txt")
        self.html = env.get_template(f"{creative}/email.{locale}.html")
        self.blocks = env.get_template(f"_shared/blocks.{locale}.jinja")
        self.locale = locale

    def recipients(self, n: int, *, now: datetime, expires_at: date) -> list[Recipient]:
        """n users' values as the bench's users and coupons have them (prepared untimed)."""
        shop = {"name": "My Shop", "currency": "CNY"}
        result = []
        for i in range(n):
            code = uuid.uuid4().hex[:12].upper()
            token = uuid.uuid4().hex + uuid.uuid4().hex[:11]  # 43 characters, as Nudge's
            unsubscribe_url = UNSUBSCRIBE.format(token=token)
            context = {
                "user": {"name": f"Ada {i}", "first_name": "Ada", "locale": self.locale},
                "offer": {
                    "value": 20,
                    "percent_off": None,
                    "currency": "CNY",
                    "min_order": 100,
                    "expires_at": expires_at,
                    "code": f"{code[:4]}-{code[4:8]}-{code[8:]}",
                },
                "shop": shop,
                "locale": self.locale,
                "url": LANDING,
                "unsubscribe_url": unsubscribe_url,
            }
            to = f"Ada {i} <u{i:07d}@example.com>"
            message_id = f"<{uuid.uuid4().hex}@example.com>"
            result.append(Recipient(context, to, message_id, unsubscribe_url))
        self.date_header = format_datetime(now)
        return result

    def compose(self, recipient: Recipient) -> EmailMessage:
        variables = dict(recipient.context)
        # The blocks (offer line, greeting, terms) see this user's values, as in Nudge.
        variables["blocks"] = self.blocks.make_module(vars=recipient.context)
        subject = " ".join(self.subject.render(variables).split())
        text = self.text.render(variables).strip() + "\n"
        html = self.html.render(variables).strip() + "\n"
        message = EmailMessage()
        message["From"] = FROM
        message["To"] = recipient.to
        message["Subject"] = subject
        message["Date"] = self.date_header
        message["Message-ID"] = recipient.message_id
        message["List-Unsubscribe"] = f"<{recipient.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message


def send_all(renderer: HandRenderer, recipients: list[Recipient], host: str, port: int) -> None:
    """Render, compose and send every message, in order, on one SMTP connection."""
    with smtplib.SMTP(host, port) as connection:
        for recipient in recipients:
            connection.send_message(renderer.compose(recipient))
