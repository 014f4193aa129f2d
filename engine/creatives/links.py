"""Links that carry attribution: UTM parameters and a per-user signed token.

UTM values are lowercase slugs because GA4 is case-sensitive (`Winback` and `winback`
would be two campaigns). Query parameters already on the base URL (a `gclid`, a shop's
own tracking) are kept untouched. The token lets the landing page recognise the user
(and apply their coupon) without putting an id or email in the URL in clear; it
expires (`[serve] link_days`, 90 days by default), so an old forwarded message stops
showing its reader the original recipient's name and code.

Message links (`message_link_token`) are the short signed references of the tracked
links in emails and SMS (`<serve base_url>/c/<token>`): an outbox action id, which of
its links (landing page or shop) and an expiry, 41 characters in all, so an SMS link
stays short. The server derives the target from the action's creative, rule and
variant (engine/serve/clicks.py), so a token can only ever lead where the creative
leads: there is no target in it to tamper with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content")
TOKEN_PARAM = "t"
SIGNATURE_CHARS = 22  # 132 bits of the HMAC: plenty against forgery, short in an SMS


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")


def b64url(data: bytes) -> str:
    """Base64url without padding: what every signed token of Nudge is spelt in."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature_of(secret: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message`, base64url, cut to SIGNATURE_CHARS."""
    return b64url(hmac.new(secret, message, hashlib.sha256).digest())[:SIGNATURE_CHARS]


_HEX = re.compile(r"[0-9a-f]{1,16}")


def same_signature(expected: str, given: str) -> bool:
    """Constant-time comparison of a signature with what a visitor sent: text from a URL
    may hold any character, and `hmac.compare_digest` refuses non-ASCII `str`."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _signature(secret: bytes, user_id: str, rule_id: str, expires: int) -> str:
    # The rule id is signed too, so a token from one campaign cannot claim another's coupon.
    message = f"{user_id}\n{rule_id}\n{expires}".encode()
    return signature_of(secret, message)


def sign_token(secret: bytes, user_id: str, rule_id: str, *, expires_at: datetime) -> str:
    """`<user id, base64url>.<expiry, hex Unix seconds>.<HMAC-SHA256 signature>` for
    links of one rule."""
    expires = int(expires_at.timestamp())
    signature = _signature(secret, user_id, rule_id, expires)
    return f"{b64url(user_id.encode())}.{expires:x}.{signature}"


def verify_token(secret: bytes, token: str, rule_id: str, *, now: datetime) -> str | None:
    """The user id of a valid, unexpired token, or None (expired, tampered, other rule,
    malformed, or the expiry-less format of earlier versions)."""
    try:
        encoded, expiry, signature = token.split(".")
        user_id = unb64url(encoded).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not _HEX.fullmatch(expiry):  # one spelling per token: no "0x", "_", spaces
        return None
    expires = int(expiry, 16)
    if not same_signature(_signature(secret, user_id, rule_id, expires), signature):
        return None
    return user_id if now.timestamp() < expires else None


# -- message links: /c/<token> of the server, a signed reference to one outbox action

# The key message links are signed with (the environment only): the dispatcher signs,
# `nudge serve` verifies.
SERVE_SECRET_ENV = "NUDGE_SERVE_SECRET"
MESSAGE_LINKS = ("landing", "shop")  # a link's index in the token
_MESSAGE_LINK = struct.Struct(">QBI")  # outbox action id, link index, expiry (Unix seconds)
_MESSAGE_DOMAIN = b"nudge-message-link-v1\n"


def _message_signature(secret: bytes, payload: str) -> str:
    return signature_of(secret, _MESSAGE_DOMAIN + payload.encode())


def message_link_token(secret: bytes, action_id: int, link: str, *, expires_at: datetime) -> str:
    """`<18 characters of payload>.<22 of signature>` for link `link` of one action."""
    packed = _MESSAGE_LINK.pack(action_id, MESSAGE_LINKS.index(link), int(expires_at.timestamp()))
    payload = b64url(packed)
    return f"{payload}.{_message_signature(secret, payload)}"


def read_message_link(secret: bytes, token: str) -> tuple[int, str, int] | None:
    """(action id, link name, expiry in Unix seconds) of a token this key signed, or
    None when it is not one (malformed, forged, tampered). The caller checks expiry."""
    try:
        payload, signature = token.split(".")
        action_id, index, expires = _MESSAGE_LINK.unpack(unb64url(payload))
        link = MESSAGE_LINKS[index]
    except (ValueError, IndexError, struct.error):
        return None
    if not same_signature(_message_signature(secret, payload), signature):
        return None
    return action_id, link, expires


def tracked_url(
    url: str,
    *,
    source: str,
    medium: str,
    campaign: str,
    content: str | None,
    token: str | None,
) -> str:
    """`url` with UTM parameters (and the token) added, other parameters kept."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in UTM_KEYS]
    query += [("utm_source", slug(source)), ("utm_medium", slug(medium))]
    query.append(("utm_campaign", slug(campaign)))
    if content:
        query.append(("utm_content", slug(content)))
    if token:
        query.append((TOKEN_PARAM, token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def missing_utm(url: str, *, variant: str | None) -> list[str]:
    """The UTM parameters a tracked link lacks (utm_content only matters with a variant)."""
    present = {key for key, value in parse_qsl(urlsplit(url).query) if value}
    wanted = UTM_KEYS if variant else UTM_KEYS[:3]
    return [key for key in wanted if key not in present]
