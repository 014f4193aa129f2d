"""Building the MIME message of one marketing email.

Message-ID is derived from the idempotency key: a re-delivery after a crash carries
the same Message-ID, so receiving servers and clients can recognise the duplicate.
List-Unsubscribe + List-Unsubscribe-Post make one-click unsubscribe work in Gmail,
Yahoo and Apple Mail (RFC 8058; required of bulk senders since 2024).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr

# The compat32 MIME classes, not EmailMessage with policy.default: the latter parses
# every header it is given through the header registry, which costs more than the
# SMTP round trip of a small message. Quoted-printable keeps bodies readable.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def message_id(key: str, from_address: str) -> str:
    domain = from_address.rpartition("@")[2] or "nudge.invalid"
    return f"<{re.sub(r'[^A-Za-z0-9.$_-]', '-', key)}@{domain}>"


def _address(name: str | None, address: str) -> str:
    return formataddr((name, address), charset="utf-8") if name else address


def _text_part(text: str, subtype: str) -> MIMEText:
    return MIMEText(text, subtype, _UTF8_QP)


def build_email(
    *,
    key: str,
    to_address: str,
    to_name: str | None,
    from_address: str,
    from_name: str | None,
    reply_to: str | None,
    subject: str,
    text: str,
    html: str | None,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    now: datetime,
    headers: dict[str, str] | None = None,
) -> Message:
    if html:
        message: Message = MIMEMultipart("alternative")
        message.attach(_text_part(text, "plain"))
        message.attach(_text_part(html, "html"))
    else:
        message = _text_part(text, "plain")
    message["From"] = _address(from_name, from_address)
    message["To"] = _address(to_name, to_address)
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = Header(subject, "utf-8").encode() if not subject.isascii() else subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(key, from_address)
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        message[name] = value
    return message
