"""Building the MIME message of one marketing email.

Message-ID is derived from the idempotency key: a re-delivery after a crash carries
the same Message-ID, so receiving servers and clients can recognise the duplicate.
List-Unsubscribe + List-Unsubscribe-Post make one-click unsubscribe work in Gmail,
Yahoo and Apple Mail (RFC 8058; required of bulk senders since 2024).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr


def message_id(key: str, from_address: str) -> str:
    domain = from_address.rpartition("@")[2] or "nudge.invalid"
    return f"<{re.sub(r'[^A-Za-z0-9.$_-]', '-', key)}@{domain}>"


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
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((from_name, from_address)) if from_name else from_address
    message["To"] = formataddr((to_name, to_address)) if to_name else to_address
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(key, from_address)
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    message["List-Unsubscribe"] = ", ".join(targets)
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message
