"""The bytes and envelope SMTP sends for one email, without building a Message.

`smtplib.SMTP.send_message(message)` parses the From and To headers back into the
envelope, copies the message, and flattens it with a BytesGenerator: about half of
the CPU an email costs, for a message whose shape is always the same (build_email's:
multipart/alternative of two quoted-printable UTF-8 parts, or one such part). Here
the same bytes are written directly: the same header folding (the policy's own
`fold_binary`, header by header), the same quoted-printable bodies, the same
`>From ` mangling, boundaries and line endings. `wire_email` returns None for any
input where the shortcut is not certain to match the standard library (non-ASCII
addresses, an empty body, an address header among the extra headers...): the
message is then sent with send_message. tests/delivery/test_email_wire.py compares
both byte for byte, through a real SMTP server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import quoprimime
from email.header import Header
from email.utils import format_datetime, getaddresses
from functools import lru_cache

from engine.delivery.email_message import (
    _UTF8_WORDS,
    QUICK_FOLDING,
    _address,
    _text_part,
    message_id,
)

# smtplib flattens with the message's policy and CRLF line endings.
_POLICY = QUICK_FOLDING.clone(linesep="\r\n")
_FROM_LINE = re.compile(r"^From ", re.MULTILINE)  # mangled to ">From " (compat32)
# Headers whose presence changes what send_message does (envelope, Bcc removal).
_ENVELOPE_HEADERS = {"sender", "from", "to", "cc", "bcc", "resent-date", "resent-bcc"}
# A plain dot-atom address, and a display name with no character that the address
# parser treats specially: for these, the envelope address is the address itself.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_NAME = re.compile(
    r"[^\x00-\x20()<>@,;:\\\".\[\]\x7f]+(?: [^\x00-\x20()<>@,;:\\\".\[\]\x7f]+)*"
)
# The folded multipart Content-Type with a stand-in boundary of the same length and
# characters; only the boundary differs between messages (see new_boundary()).
_STAND_IN = "=" * 15 + "0" * 19 + "=="


@dataclass(frozen=True, slots=True)
class WireEmail:
    """What `send_message` would pass to `sendmail`: envelope sender, recipients, bytes.

    The recipients are plain dot-atom addresses (`_envelope_address`): smtplib's
    `quoteaddr` of each is the address in angle brackets."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


def _fold(name: str, value: str) -> bytes:
    return _POLICY.fold_binary(name, value)


def _part_headers(subtype: str) -> bytes:
    part = _text_part("x", subtype)
    return b"".join(_fold(name, value) for name, value in part.raw_items()) + b"\r\n"


_PART_HEADERS = {"plain": _part_headers("plain"), "html": _part_headers("html")}
_CONSTANT_FOLDS: dict[tuple[str, str], bytes] = {}


def _fold_constant(name: str, value: str) -> bytes:
    """Folding of a header that repeats across messages (From, the rule's header)."""
    key = (name, value)
    folded = _CONSTANT_FOLDS.get(key)
    if folded is None:
        if len(_CONSTANT_FOLDS) > 1024:
            _CONSTANT_FOLDS.clear()
        folded = _CONSTANT_FOLDS[key] = _fold(name, value)
    return folded


def _multipart_type(boundary: str) -> bytes:
    if len(boundary) != len(_STAND_IN) or not boundary.strip("=").isdigit():
        return _fold("Content-Type", f'multipart/alternative; boundary="{boundary}"')
    folded = _fold_constant("Content-Type", f'multipart/alternative; boundary="{_STAND_IN}"')
    return folded.replace(_STAND_IN.encode(), boundary.encode(), 1)


def _body(text: str) -> bytes:
    """A quoted-printable UTF-8 part's payload as the generator writes it."""
    encoded = quoprimime.body_encode(text.encode("utf-8").decode("latin1"))
    if "From " in encoded:
        encoded = _FROM_LINE.sub(">From ", encoded)
    # body_encode ends lines with "\n" only: it splits on every line break and
    # quotes any other line-breaking character (\v, \f, \x1c-\x1e, \x85).
    return encoded.replace("\n", "\r\n").encode("ascii")


def _part(text: str, subtype: str) -> bytes:
    return _PART_HEADERS[subtype] + _body(text)


@lru_cache(maxsize=4096)
def _encoded_subject(subject: str) -> str:
    # Pure; the subjects of a campaign differ by little more than first names.
    return Header(subject, _UTF8_WORDS).encode()


def _envelope_address(name: str | None, address: str) -> str | None:
    """The address send_message would parse out of `_address(name, address)`, when
    certain without parsing; None otherwise."""
    if not _PLAIN_ADDRESS.fullmatch(address):
        return None
    if name and not _PLAIN_NAME.fullmatch(name):
        return None
    return address


_SENDERS: dict[tuple[str | None, str], str] = {}


def _sender(name: str | None, address: str) -> str:
    """The envelope sender send_message parses out of the From header (the shop's:
    parsed once)."""
    found = _SENDERS.get((name, address))
    if found is None:
        if len(_SENDERS) > 64:
            _SENDERS.clear()
        found = _SENDERS[(name, address)] = getaddresses([_address(name, address)])[0][1]
    return found


def wire_email(
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
    boundary: str,
    headers: dict[str, str] | None = None,
) -> WireEmail | None:
    """What SMTP sends for `build_email(...)` with the same arguments, or None."""
    headers = headers or {}
    if not text or any(name.lower() in _ENVELOPE_HEADERS for name in headers):
        return None
    recipient = _envelope_address(to_name, to_address)
    sender = _sender(from_name, from_address)
    if recipient is None or not sender.isascii():
        return None
    out: list[bytes] = []
    if html:
        out += (_multipart_type(boundary), _fold_constant("MIME-Version", "1.0"))
    else:
        out.append(_PART_HEADERS["plain"][:-2])  # its headers, without the blank line
    out.append(_fold_constant("From", _address(from_name, from_address)))
    out.append(_fold("To", _address(to_name, to_address)))
    if reply_to:
        out.append(_fold_constant("Reply-To", reply_to))
    out.append(_fold("Subject", subject if subject.isascii() else _encoded_subject(subject)))
    out.append(_fold("Date", format_datetime(now)))
    out.append(_fold("Message-ID", message_id(key, from_address)))
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
    out.append(_fold("List-Unsubscribe", ", ".join(targets)))
    out.append(_fold_constant("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    for name, value in headers.items():
        out.append(_fold(name, value))
    out.append(b"\r\n")
    if html:
        dash = f"--{boundary}".encode()
        out += (dash, b"\r\n", _part(text, "plain"), b"\r\n", dash, b"\r\n")
        out += (_part(html, "html"), b"\r\n", dash, b"--\r\n")
    else:
        out.append(_body(text))
    return WireEmail(sender, (recipient,), b"".join(out))
