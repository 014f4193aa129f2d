"""Standard Webhooks signatures (https://www.standardwebhooks.com).

`webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`.
A secret written as `whsec_<base64>` is decoded as the spec says; any other text is
used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(
    message_id: str, timestamp: datetime, body: str, secret: str | None
) -> dict[str, str]:
    """The three Standard Webhooks headers (no signature when there is no secret)."""
    seconds = int(timestamp.timestamp())
    headers = {"webhook-id": message_id, "webhook-timestamp": str(seconds)}
    if secret:
        headers["webhook-signature"] = sign(secret, message_id, seconds, body)
    return headers


def verify(secret: str, headers: dict[str, str], body: str) -> bool:
    """True when one of the v1 signatures in `headers` matches (receivers and tests)."""
    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    offered = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
