"""Building the MIME message of one marketing email.

Message-ID is derived from the idempotency key: a re-delivery after a crash carries
the same Message-ID, so receiving servers and clients can recognise the duplicate.
List-Unsubscribe + List-Unsubscribe-Post make one-click unsubscribe work in Gmail,
Yahoo and Apple Mail (RFC 8058; required of bulk senders since 2024).
"""

from __future__ import annotations

import random
import re
import sys
from datetime import datetime
from email import base64mime, quoprimime
from email.charset import QP, RFC2047_CHROME_LEN, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.quoprimime import _QUOPRI_HEADER_MAP
from email.utils import format_datetime, formataddr

# The compat32 MIME classes, not EmailMessage with policy.default: the latter parses
# every header it is given through the header registry, which costs more than the
# SMTP round trip of a small message. Quoted-printable keeps bodies readable.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP

# A header value that compat32 folding returns unchanged: printable ASCII words
# separated by single spaces, on a line (with its name) no longer than the policy's
# max_line_length (78 unless a generator sets another; None or 0: no folding).
_PLAIN_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_ONE_WORD = re.compile(r"[\x21-\x7e]+")


class _QuickFolding(Compat32):
    """compat32, with the folding of short plain header values skipped: for those,
    `Header(value).encode()` (a character-by-character pass, most of the cost of
    flattening a message) returns the value itself. Any other value is folded as
    compat32 folds it. The bytes sent are the same."""

    def _fold(self, name, value, sanitize):
        if isinstance(value, str):
            fits = not self.max_line_length or len(name) + 2 + len(value) <= self.max_line_length
            if fits and _PLAIN_VALUE.fullmatch(value):
                return f"{name}: {value}{self.linesep}"
            if not fits and _ONE_WORD.fullmatch(value):
                # A word too long for the line (a List-Unsubscribe URL): compat32 moves
                # it whole to a continuation line.
                return f"{name}: {self.linesep} {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


QUICK_FOLDING = _QuickFolding()


class _Utf8Words(Charset):
    """UTF-8 for RFC 2047 encoded words, split into lines as the standard library
    splits them, in one pass: the stdlib encodes the growing line again after each
    character to measure it (quadratic; most of the cost of a non-ASCII subject).
    UTF-8 encodes each character on its own, so a running count gives the same
    lengths, hence the same lines."""

    def __init__(self):
        super().__init__("utf-8")

    def header_encode_lines(self, string, maxlengths):
        codec = self.output_codec  # utf-8
        encoder_module = self._get_encoder(string.encode(codec))
        quoted = encoder_module is quoprimime
        extra = len(self.get_output_charset()) + RFC2047_CHROME_LEN
        lines: list[str | None] = []
        current: list[str] = []
        size = 0  # QP: encoded length so far; base64: octets so far
        maxlen = next(maxlengths) - extra
        for character in string:
            octets = character.encode(codec)
            step = sum(len(_QUOPRI_HEADER_MAP[o]) for o in octets) if quoted else len(octets)
            length = size + step if quoted else base64mime.header_length(b"-" * (size + step))
            if length > maxlen:
                if not lines and not current:  # nothing fits on the first line
                    lines.append(None)
                else:
                    lines.append(
                        encoder_module.header_encode("".join(current).encode(codec), codec)
                    )
                current, size = [character], step
                maxlen = next(maxlengths) - extra
            else:
                current.append(character)
                size += step
        lines.append(encoder_module.header_encode("".join(current).encode(codec), codec))
        return lines


_UTF8_WORDS = _Utf8Words()


def new_boundary() -> str:
    """A multipart boundary as the generator makes one, chosen here so that the
    generator need not search the parts for it (a regex compiled per message): the
    parts are quoted-printable, where "=" only ends a line, so a line of "="s and
    digits cannot occur in them."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="


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
    boundary: str | None = None,
) -> Message:
    if html:
        message: Message = MIMEMultipart("alternative", boundary=boundary or new_boundary())
        message.attach(_text_part(text, "plain"))
        message.attach(_text_part(html, "html"))
    else:
        message = _text_part(text, "plain")
    message.policy = QUICK_FOLDING  # the generator folds every part's headers with it
    message["From"] = _address(from_name, from_address)
    message["To"] = _address(to_name, to_address)
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = Header(subject, _UTF8_WORDS).encode() if not subject.isascii() else subject
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
