"""Links that carry attribution: UTM parameters and a per-user signed token.

UTM values are lowercase slugs because GA4 is case-sensitive (`Winback` and `winback`
would be two campaigns). Query parameters already on the base URL (a `gclid`, a shop's
own tracking) are kept untouched. The token lets the landing page recognise the user
(and apply their coupon) without putting an id or email in the URL in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content")
TOKEN_PARAM = "t"
_SIGNATURE_CHARS = 22  # 132 bits of the HMAC: plenty against forgery, short in an SMS


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, user_id: str, rule_id: str) -> str:
    # The rule id is signed too, so a token from one campaign cannot claim another's coupon.
    digest = hmac.new(secret, f"{user_id}\n{rule_id}".encode(), hashlib.sha256).digest()
    return _b64(digest)[:_SIGNATURE_CHARS]


def sign_token(secret: bytes, user_id: str, rule_id: str) -> str:
    """`<user id, base64url>.<HMAC-SHA256 signature>` for links of one rule."""
    return f"{_b64(user_id.encode())}.{_signature(secret, user_id, rule_id)}"


def verify_token(secret: bytes, token: str, rule_id: str) -> str | None:
    """The user id of a valid token, or None (tampered, other rule, malformed)."""
    try:
        encoded, signature = token.split(".", 1)
        user_id = _unb64(encoded).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    expected = _signature(secret, user_id, rule_id)
    return user_id if hmac.compare_digest(expected, signature) else None


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
