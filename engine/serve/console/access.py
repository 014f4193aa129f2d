"""Who may read the console: one shared token, sent as HTTP Basic or Bearer.

The token is NUDGE_CONSOLE_TOKEN, else the event API's NUDGE_API_TOKEN (one secret to
manage on small shops). Browsers on a phone can only send Basic credentials from their
own prompt, so Basic is accepted with any user name and the token as the password;
scripts may send `Authorization: Bearer <token>`. Both are compared in constant time.

Every console request takes one token from a per-client bucket before the credentials
are compared, so a client that ran out is refused even with a right guess; a wrong
token costs `FAILED_ATTEMPT_COST` tokens, so guessing is much slower than browsing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from starlette.requests import Request
from starlette.responses import HTMLResponse

from engine.serve.api import API_TOKEN_ENV
from engine.serve.console.render import Pages
from engine.serve.safety import TokenBucket, secret_from_env

CONSOLE_TOKEN_ENV = "NUDGE_CONSOLE_TOKEN"
CONSOLE_BURST = 30  # a person browsing: a page is one request (no assets to fetch)
CONSOLE_RATE = 1.0  # per second and client IP, per process
FAILED_ATTEMPT_COST = 5
CHALLENGE = 'Basic realm="nudge console"'


def console_token(
    explicit: bytes | None, api_token: bytes | None, environ: dict[str, str] | None = None
) -> bytes | None:
    """The console's token: given, else NUDGE_CONSOLE_TOKEN, else the API's token."""
    environ = os.environ if environ is None else environ
    return explicit or secret_from_env(CONSOLE_TOKEN_ENV, environ) or api_token


def presented_token(authorization: str) -> bytes | None:
    """The token an `Authorization` header carries (Basic password or Bearer), or None."""
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value.encode()
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, colon, password = decoded.partition(b":")
        return password if colon else None
    return None


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class ConsoleAccess:
    """Decides, per request, whether the console may answer (`refusal` None) or not."""

    def __init__(self, token: bytes | None, limiter: TokenBucket, pages: Pages):
        self.token = token
        self.limiter = limiter
        self.pages = pages  # refusals share the console's look

    def refusal(self, request: Request) -> HTMLResponse | None:
        if self.token is None:
            return self.pages.notice(
                503,
                "Console disabled",
                f"Set {CONSOLE_TOKEN_ENV} (or {API_TOKEN_ENV}) in the environment of "
                "nudge serve and restart it; then sign in with that token as the password.",
                nav=False,
            )
        client = client_key(request)
        if not self.limiter.allow(client):
            response = self.pages.notice(
                429, "Too many requests", "Wait a moment, then retry.", nav=False
            )
            response.headers["retry-after"] = str(self.limiter.retry_after())
            return response
        given = presented_token(request.headers.get("authorization", ""))
        if given is not None and hmac.compare_digest(given, self.token):
            return None
        if given is not None:
            for _ in range(FAILED_ATTEMPT_COST - 1):
                self.limiter.allow(client)
        response = self.pages.notice(
            401,
            "Sign in",
            "Sign in with the console token as the password (any user name).",
            nav=False,
        )
        response.headers["www-authenticate"] = CHALLENGE
        return response
